"""The web console (a placeholder page until the console issue lands)."""
