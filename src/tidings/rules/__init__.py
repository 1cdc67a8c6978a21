"""Business rules: rule sets of frequency caps and quiet hours, applied to marketing messages."""
