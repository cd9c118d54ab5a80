"""Append-only audit log of every tool call that touches a host."""
