"""Benchmarks of tidings: `make bench` (or `python -m bench`) runs them and prints a table."""

from __future__ import annotations
