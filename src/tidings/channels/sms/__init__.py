"""The SMS channel: Twilio and a configurable HTTP provider behind one adapter, and Twilio's
webhooks (delivery status, STOP/START keywords)."""
