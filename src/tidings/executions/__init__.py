"""Executions (step 7): triggers through the native API, idempotency, message fan-out."""
