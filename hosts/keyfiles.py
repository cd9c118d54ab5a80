"""Inspecting private keys an admin registers. CONTRACT — to be implemented."""

from __future__ import annotations

from dataclasses import dataclass


class KeyFileError(ValueError):
    """The key text cannot be loaded (wrong format, wrong or missing passphrase, unsupported type)."""


@dataclass(frozen=True)
class KeyInfo:
    key_type: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"
    public_key: str  # OpenSSH public key line, "type base64 comment"
    fingerprint: str  # SHA256:...


def inspect_private_key(text: str, passphrase: str | None = None) -> KeyInfo:
    """Load an ed25519, ECDSA or RSA private key (OpenSSH or PEM) and describe its public half."""
    raise NotImplementedError
