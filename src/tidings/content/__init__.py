"""Message content: per-channel shapes, the template engine, validation and preview rendering."""
