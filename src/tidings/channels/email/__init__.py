"""The email channel: MIME assembly and delivery over SMTP."""
