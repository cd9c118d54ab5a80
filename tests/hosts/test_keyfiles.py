from __future__ import annotations

import pytest

from hosts.keyfiles import (
    KeyFileError,
    PassphraseRequired,
    WrongPassphrase,
    generate_ed25519,
    inspect_private_key,
)
from tests.hosts.conftest import ssh_keygen_fingerprint


@pytest.mark.parametrize(
    ("kind", "pem", "key_type"),
    [
        ("ed25519", False, "ssh-ed25519"),
        ("ecdsa", False, "ecdsa-sha2-nistp256"),
        ("ecdsa", True, "ecdsa-sha2-nistp256"),
        ("rsa", False, "ssh-rsa"),
        ("rsa", True, "ssh-rsa"),
    ],
)
def test_it_describes_a_key_like_ssh_keygen(keygen, kind, pem, key_type) -> None:
    path = keygen(kind, pem=pem)
    info = inspect_private_key(path.read_text())
    assert info.key_type == key_type
    assert info.fingerprint == ssh_keygen_fingerprint(path)
    assert info.public_key.split()[:2] == path.with_suffix(".pub").read_text().split()[:2]


def test_it_reads_an_encrypted_key_with_its_passphrase(keygen) -> None:
    path = keygen("ed25519", passphrase="open sesame")
    info = inspect_private_key(path.read_text(), "open sesame")
    assert info.fingerprint == ssh_keygen_fingerprint(path)


def test_it_reads_an_encrypted_pem_key_with_its_passphrase(keygen) -> None:
    path = keygen("ecdsa", passphrase="open sesame", pem=True)
    assert inspect_private_key(path.read_text(), "open sesame").fingerprint == ssh_keygen_fingerprint(path)


def test_it_asks_for_the_passphrase_of_an_encrypted_key(keygen) -> None:
    path = keygen("ed25519", passphrase="open sesame")
    with pytest.raises(
        PassphraseRequired, match="the key is encrypted; give its passphrase with --passphrase-stdin"
    ):
        inspect_private_key(path.read_text())


def test_it_reports_a_wrong_passphrase_without_echoing_it(keygen) -> None:
    path = keygen("ed25519", passphrase="open sesame")
    with pytest.raises(WrongPassphrase) as excinfo:
        inspect_private_key(path.read_text(), "not the passphrase")
    assert "not the passphrase" not in str(excinfo.value)


def test_it_accepts_crlf_line_endings(keygen) -> None:
    path = keygen("ed25519")
    text = path.read_text().replace("\n", "\r\n")
    assert inspect_private_key(text).fingerprint == ssh_keygen_fingerprint(path)


def test_it_rejects_dsa_keys(keygen) -> None:
    try:
        path = keygen("dsa")
    except Exception:
        pytest.skip("this ssh-keygen cannot make DSA keys")
    with pytest.raises(KeyFileError, match="unsupported key type"):
        inspect_private_key(path.read_text())


def test_it_rejects_a_public_key_and_garbage(keygen) -> None:
    path = keygen("ed25519")
    with pytest.raises(KeyFileError, match="public key"):
        inspect_private_key(path.with_suffix(".pub").read_text())
    with pytest.raises(KeyFileError, match="not a private key"):
        inspect_private_key("hello")
    with pytest.raises(KeyFileError, match="cannot be read"):
        inspect_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")


def test_it_generates_an_ed25519_key_pair(tmp_path) -> None:
    private_text, info = generate_ed25519()
    assert private_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert info.key_type == "ssh-ed25519"
    path = tmp_path / "generated"
    path.write_text(private_text)
    path.chmod(0o600)
    assert info.fingerprint == ssh_keygen_fingerprint(path)
    assert inspect_private_key(private_text).fingerprint == info.fingerprint
