"""Feedback webhooks: signed event deliveries to endpoints a workspace subscribes."""
