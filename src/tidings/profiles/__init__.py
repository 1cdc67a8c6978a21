"""Profiles: identities in namespaces, attributes, per-channel marketing consent."""
