"""Open and click tracking: rewritten links, the open pixel, their routes and the events."""
