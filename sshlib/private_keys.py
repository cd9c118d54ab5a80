"""Private keys and fingerprints: the one parser the admin side and the SSH runtime share.

``hosts.keyfiles`` checks a key when an admin registers it; ``ssh.connect`` loads it when
it connects. Both go through ``parse_private_key``, so a key accepted at registration is
a key the connection can use, and each side words the failure for its own audience.
"""

from __future__ import annotations

import base64
import hashlib
import warnings
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

SupportedKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_USE_INSTEAD = "use an ed25519, ECDSA or RSA key"
Problem = Literal["passphrase_required", "wrong_passphrase", "unsupported", "unreadable"]


class PrivateKeyError(ValueError):
    """Why a private key cannot be used; the message never contains the key or passphrase."""

    def __init__(self, problem: Problem, message: str) -> None:
        self.problem = problem
        super().__init__(message)


def fingerprint_of_blob(blob: bytes) -> str:
    """``SHA256:`` + unpadded base64 of the key blob's digest, as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def parse_private_key(text: str, passphrase: str | None = None) -> SupportedKey:
    """An ed25519, ECDSA or RSA private key in OpenSSH or PEM (PKCS#1, SEC1, PKCS#8) form.

    The OpenSSH container is tried first, then PEM: each loader refuses the other's format
    with ValueError, so no format sniffing is needed. A passphrase given for an unencrypted
    key is ignored.
    """
    stripped = text.strip()
    if stripped.startswith("PuTTY-User-Key-File"):
        raise PrivateKeyError(
            "unsupported", "PuTTY keys are not supported; convert with: puttygen KEY -O private-openssh"
        )
    if stripped.startswith(("ssh-", "ecdsa-")):
        raise PrivateKeyError("unreadable", "this is a public key; give the private key file instead")
    data = stripped.encode() + b"\n"
    password = passphrase.encode() if passphrase else None
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            with warnings.catch_warnings():
                # DSA loads with a deprecation warning; it is refused below with a clearer message.
                warnings.simplefilter("ignore")
                key = loader(data, password)
        except TypeError as exc:
            # cryptography reports a passphrase mismatch (given / needed) with TypeError.
            if "not encrypted" in str(exc):
                return parse_private_key(text, None)
            raise PrivateKeyError(
                "passphrase_required", "the key is encrypted and needs its passphrase"
            ) from None
        except UnsupportedAlgorithm:
            raise PrivateKeyError(
                "unsupported", "unsupported key type: use an ed25519, ECDSA or RSA key"
            ) from None
        except ValueError:
            continue
        if not isinstance(key, SupportedKey):
            kind = "DSA" if "DSA" in type(key).__name__ else type(key).__name__.removesuffix("PrivateKey")
            raise PrivateKeyError(
                "unsupported", f"unsupported key type {kind}: use an ed25519, ECDSA or RSA key"
            )
        return key
    if password is not None:
        raise PrivateKeyError("wrong_passphrase", "wrong passphrase for the key (or the key file is damaged)")
    if stripped.startswith("-----BEGIN"):
        raise PrivateKeyError("unreadable", "the key cannot be read: damaged or in an unsupported format")
    raise PrivateKeyError("unreadable", "not a private key: expected an OpenSSH or PEM private key")
