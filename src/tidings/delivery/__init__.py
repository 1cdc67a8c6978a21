"""Delivery: background workers (campaign schedules now; message claiming with executions)."""
