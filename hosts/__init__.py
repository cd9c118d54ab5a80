"""Inventory: hosts, credentials, host keys."""
