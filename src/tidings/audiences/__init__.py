"""Audiences: who an audience execution of a marketing campaign sends to."""
