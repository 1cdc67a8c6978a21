"""Unsubscribe links: signed per-message tokens, their pages, and the consent change they make."""
