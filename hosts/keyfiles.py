"""Inspecting private keys an admin registers.

A key is checked when it is registered, not when a model first tries to use it: a
wrong passphrase or an unsupported key type is reported to the admin who can fix it.
Only the public half (OpenSSH line and SHA256 fingerprint) ever leaves this module;
error messages never quote the key text or the passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

GENERATED_COMMENT = "sshcontrol-generated"

_SupportedKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


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


def fingerprint_of_blob(blob: bytes) -> str:
    """``SHA256:`` + unpadded base64 of the key blob's digest, as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


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


def _load(text: str, passphrase: str | None) -> _SupportedKey:
    data = text.encode()
    password = passphrase.encode() if passphrase is not None else None
    loader: Callable[[bytes, bytes | None], object]
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        loader = serialization.load_ssh_private_key
    elif "-----BEGIN" in text and "PRIVATE KEY-----" in text:
        loader = serialization.load_pem_private_key
    elif text.startswith("PuTTY-User-Key-File"):
        raise KeyFileError("PuTTY keys are not supported; convert with: puttygen KEY -O private-openssh")
    elif text.startswith(("ssh-", "ecdsa-")):
        raise KeyFileError("this is a public key; give the private key file instead")
    else:
        raise KeyFileError("not a private key: expected an OpenSSH or PEM private key")
    try:
        with warnings.catch_warnings():
            # DSA loads with a deprecation warning; it is rejected below with a clearer message.
            warnings.simplefilter("ignore")
            key = loader(data, password)
    except TypeError as exc:
        # cryptography signals passphrase mismatches with TypeError.
        if "not encrypted" in str(exc):
            # A passphrase given for an unencrypted key is harmless: load it without one.
            return _load(text, None)
        raise PassphraseRequired(
            "the key is encrypted; give its passphrase with --passphrase-stdin"
        ) from None
    except UnsupportedAlgorithm:
        raise KeyFileError("unsupported key type: use an ed25519, ECDSA or RSA key") from None
    except ValueError:
        if password is not None and _is_encrypted(text):
            raise WrongPassphrase("wrong passphrase for the key (or the key file is damaged)") from None
        raise KeyFileError("the key cannot be read: damaged or in an unsupported format") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        kind = "DSA" if "DSA" in type(key).__name__ else type(key).__name__.removesuffix("PrivateKey")
        raise KeyFileError(f"unsupported key type {kind}: use an ed25519, ECDSA or RSA key")
    return key


def _is_encrypted(text: str) -> bool:
    if "ENCRYPTED" in text or "Proc-Type: 4,ENCRYPTED" in text:
        return True
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        # The OpenSSH container names its cipher right after the magic; "none" means plain.
        body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        try:
            raw = base64.b64decode(body)
        except ValueError:
            return False
        return b"\x00\x00\x00\x04none" not in raw[:64]
    return False


def _describe(key: _SupportedKey) -> KeyInfo:
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
