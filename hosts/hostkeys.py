"""Host key trust decisions. CONTRACT — to be implemented."""

from __future__ import annotations

from hosts.models import Host, HostKey


class HostKeyNotFound(LookupError):
    """No key with that fingerprint is known for the host."""


def trusted_keys(host: Host) -> tuple[tuple[str, str], ...]:
    """(key_type, base64) of the host's trusted keys."""
    raise NotImplementedError


def record_seen(host: Host, key_type: str, public_key: str, fingerprint: str, trusted: bool = False) -> HostKey:
    """Store a key the server presented: pending (or trusted, for trust-on-first-use).

    A key already stored keeps its state: a revoked key never becomes pending again and
    a pending key is never promoted here.
    """
    raise NotImplementedError


def trust(host: Host, fingerprint: str, by: str) -> HostKey:
    """Approve a pending key; records who and when. Raises HostKeyNotFound."""
    raise NotImplementedError


def revoke(host: Host, fingerprint: str, by: str) -> HostKey:
    raise NotImplementedError
