"""Push notifications: Firebase Cloud Messaging (HTTP v1) and APNs (token-based, HTTP/2)."""
