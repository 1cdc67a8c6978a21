"""Tidings: self-hosted API-triggered campaigns over email, SMS and push."""

from __future__ import annotations

__version__ = "0.1.0"
