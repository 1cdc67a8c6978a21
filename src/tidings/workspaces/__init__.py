"""Workspaces (tenants), API keys, scopes and request authentication."""
