"""`python -m tidings` is the `tidings` command."""

from __future__ import annotations

from tidings.cli import main

main()
