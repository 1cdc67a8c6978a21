"""Campaigns: authoring steps 1-6, review, lifecycle state machine and versions."""
