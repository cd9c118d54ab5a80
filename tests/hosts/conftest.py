"""Fixtures for the inventory tests: key files made by the real ssh-keygen."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hosts import crypto


@pytest.fixture
def keygen(tmp_path: Path) -> Callable[..., Path]:
    """``keygen("ed25519", passphrase="", pem=False)`` -> path of a new private key file."""

    def make(kind: str = "ed25519", passphrase: str = "", pem: bool = False) -> Path:
        path = tmp_path / f"id_{kind}_{'pem' if pem else 'openssh'}_{'enc' if passphrase else 'plain'}"
        args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "test", "-f", str(path)]
        if kind == "rsa":
            args += ["-b", "2048"]
        if pem:
            args += ["-m", "PEM"]
        subprocess.run(args, check=True)
        return path

    return make


def ssh_keygen_fingerprint(path: Path) -> str:
    """The fingerprint ssh-keygen itself prints for a key file."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


@pytest.fixture
def field_keys(settings: Any) -> Iterator[Callable[[str], None]]:
    """``field_keys("NEW,OLD")`` switches settings.FIELD_KEYS; the suite's keys come back afterwards."""

    def use(keys: str) -> None:
        settings.FIELD_KEYS = keys
        crypto.reset_keys()

    yield use
    # pytest-django restores the setting after this fixture ends; forget the keys read meanwhile.
    crypto.reset_keys()
