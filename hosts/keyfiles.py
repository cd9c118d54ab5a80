"""Inspecting private keys an admin registers.

A key is checked when it is registered, not when a model first tries to use it: a
wrong passphrase or an unsupported key type is reported to the admin who can fix it.
Only the public half (OpenSSH line and SHA256 fingerprint) ever leaves this module;
error messages never quote the key text or the passphrase.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sshlib.private_keys import PrivateKeyError, SupportedKey, fingerprint_of_blob, parse_private_key

GENERATED_COMMENT = "sshcontrol-generated"
# A private key file is a few kilobytes; anything much larger is the wrong file.
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFileError(ValueError):
    """The key text cannot be loaded (wrong format, wrong or missing passphrase, unsupported type)."""


class PassphraseRequired(KeyFileError):
    """The key is encrypted and no passphrase was given."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not decrypt the key."""


@dataclass(frozen=True)
class KeyInfo:
    key_type: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"
    public_key: str  # OpenSSH public key line, "type base64 comment"
    fingerprint: str  # SHA256:...


def normalize_key_text(text: str) -> str:
    """Key text as it should be stored: LF line endings, no surrounding blank space, final newline.

    Keys pasted into a browser textarea arrive with CRLF, which some loaders reject.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").strip() + "\n"


def inspect_private_key(text: str, passphrase: str | None = None) -> KeyInfo:
    """Load an ed25519, ECDSA or RSA private key (OpenSSH or PEM) and describe its public half."""
    return _describe(_load(normalize_key_text(text), passphrase or None))


def generate_ed25519(comment: str = GENERATED_COMMENT) -> tuple[str, KeyInfo]:
    """A new unencrypted ed25519 key pair: (private key in OpenSSH format, its KeyInfo)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    info = _describe(key)
    return private_text, KeyInfo(info.key_type, f"{info.public_key} {comment}".strip(), info.fingerprint)


def _load(text: str, passphrase: str | None) -> SupportedKey:
    try:
        return parse_private_key(text, passphrase)
    except PrivateKeyError as exc:
        if exc.problem == "passphrase_required":
            raise PassphraseRequired(
                "the key is encrypted; give its passphrase with --passphrase-stdin"
            ) from None
        if exc.problem == "wrong_passphrase":
            raise WrongPassphrase(str(exc)) from None
        raise KeyFileError(str(exc)) from None


def _describe(key: SupportedKey) -> KeyInfo:
    try:
        line = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
    except ValueError:
        # e.g. an ECDSA curve OpenSSH has no name for (secp224r1).
        raise KeyFileError("unsupported key type: OpenSSH cannot use this key's curve") from None
    key_type, blob = line.split()[:2]
    fingerprint = fingerprint_of_blob(base64.b64decode(blob))
    return KeyInfo(key_type=key_type, public_key=line, fingerprint=fingerprint)
