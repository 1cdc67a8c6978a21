"""Proofs: one message of a campaign sent to a tester, kept out of counts and reports."""
