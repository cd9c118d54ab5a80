"""Redaction of secrets from text before it is stored or shown. CONTRACT — to be implemented."""

from __future__ import annotations

from collections.abc import Sequence

REDACTED = "[REDACTED]"


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace known secrets and secret-looking patterns (private keys, password=..., tokens)."""
    raise NotImplementedError
