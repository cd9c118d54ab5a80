"""Encryption of secrets at rest.

Ciphertexts are stock Fernet tokens (AES-128-CBC + HMAC-SHA256) behind a
self-describing prefix, ``sshc:v1:``, so a stored value says how it was made and a
plaintext that slipped in can be told apart. Keys come from ``settings.FIELD_KEYS``
(``SSHCONTROL_FIELD_KEYS`` or the file named by ``SSHCONTROL_FIELD_KEYS_FILE``:
comma-separated, newest first); on the embedded default a key file is generated in
``settings.DATA_DIR`` (mode 0600).
MultiFernet decrypts with any listed key and encrypts with the first, which is what
``rotate_field_keys`` relies on.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

log = logging.getLogger(__name__)

PREFIX = "sshc:v1:"
KEY_FILE_NAME = "field_keys"


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


def key_file_path() -> Path:
    directory = Path(settings.DATA_DIR)
    # Made as the project makes the data directory on first use: owner only.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory / KEY_FILE_NAME


def _embedded_keys() -> list[str]:
    path = key_file_path()
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
        log.warning(
            "generated a field encryption key at %s (mode 0600); back it up, it is needed to decrypt "
            "stored credentials. Set SSHCONTROL_FIELD_KEYS or SSHCONTROL_FIELD_KEYS_FILE in production.",
            path,
        )
    return _split(path.read_text())


def _split(raw: str) -> list[str]:
    return [k.strip() for k in raw.replace("\n", ",").split(",") if k.strip()]


def configured_keys() -> list[str]:
    raw: str = settings.FIELD_KEYS
    return _split(raw) if raw else _embedded_keys()


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = configured_keys()
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError) as exc:
        # Never echo the key material itself.
        raise DecryptionError("SSHCONTROL_FIELD_KEYS holds a value that is not a Fernet key") from exc


def reset_keys() -> None:
    """Forget cached keys (after rotation, or in tests that change the keys)."""
    _fernet.cache_clear()


@receiver(setting_changed)
def _forget_keys_on_change(*, setting: str, **kwargs: Any) -> None:
    # A test's override_settings(FIELD_KEYS=...) must not keep encrypting with the old keys.
    if setting in ("FIELD_KEYS", "DATA_DIR"):
        reset_keys()


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


def encrypt(plaintext: str) -> str:
    """Encrypt a secret; an already-encrypted value is returned unchanged (idempotent)."""
    if is_encrypted(plaintext):
        return plaintext
    return PREFIX + _fernet().encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    if not is_encrypted(stored):
        raise DecryptionError("stored secret has no encryption prefix; refusing to treat it as plaintext")
    try:
        return _fernet().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError(
            "a stored secret cannot be decrypted with the configured field keys "
            "(was SSHCONTROL_FIELD_KEYS changed without rotate_field_keys?)"
        ) from exc


def rotate(stored: str) -> str:
    """Re-encrypt under the newest key."""
    return PREFIX + _fernet().rotate(stored[len(PREFIX) :].encode()).decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()
