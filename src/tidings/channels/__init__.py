"""Channels: configurations (sender identity, provider) and, later, one adapter per channel."""
