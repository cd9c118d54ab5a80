from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from hosts import crypto
from hosts.models import Credential

pytestmark = pytest.mark.django_db


def _credential(name: str, secret: str, passphrase: str = "") -> Credential:
    credential = Credential(
        name=name, kind=Credential.Kind.PRIVATE_KEY if passphrase else Credential.Kind.PASSWORD
    )
    credential.set_secret(secret)
    credential.set_passphrase(passphrase)
    credential.save()
    return credential


def _raw(name: str) -> tuple[str, str]:
    return Credential.objects.values_list("secret_encrypted", "passphrase_encrypted").get(name=name)


def test_it_re_encrypts_every_secret_under_the_newest_key(field_keys) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    field_keys(old)
    _credential("a", "secret-a")
    _credential("b", "secret-b", passphrase="phrase-b")
    _credential("empty", "")
    before = {name: _raw(name) for name in ("a", "b")}
    updated_at = Credential.objects.get(name="a").updated_at

    field_keys(f"{new},{old}")
    out = io.StringIO()
    call_command("rotate_field_keys", stdout=out)
    assert "Rotated 3 encrypted values in 2 credentials" in out.getvalue()
    assert _raw("a")[0] != before["a"][0]
    assert _raw("b") != before["b"]
    assert Credential.objects.get(name="a").updated_at == updated_at

    # With the old key gone, everything still decrypts.
    field_keys(new)
    assert Credential.objects.get(name="a").secret() == "secret-a"
    assert Credential.objects.get(name="b").secret() == "secret-b"
    assert Credential.objects.get(name="b").passphrase() == "phrase-b"
    assert _raw("empty") == ("", "")


def test_it_changes_nothing_when_a_value_cannot_be_decrypted(field_keys) -> None:
    first, lost, new = (Fernet.generate_key().decode() for _ in range(3))
    field_keys(first)
    _credential("a", "secret-a")
    field_keys(lost)
    _credential("z", "secret-z")  # encrypted under a key that will not be configured
    before = {name: _raw(name) for name in ("a", "z")}

    field_keys(f"{new},{first}")
    with pytest.raises(CommandError, match="credential 'z' cannot be decrypted") as excinfo:
        call_command("rotate_field_keys", stdout=io.StringIO())
    assert "nothing was changed" in str(excinfo.value)
    assert {name: _raw(name) for name in ("a", "z")} == before


def test_it_prints_a_new_field_key() -> None:
    out = io.StringIO()
    call_command("generate_field_key", stdout=out)
    key = out.getvalue().strip()
    token = Fernet(key.encode()).encrypt(b"x")
    assert Fernet(key.encode()).decrypt(token) == b"x"
    assert key != crypto.generate_key()


def test_it_documents_the_rotation_procedure() -> None:
    from hosts.management.commands.rotate_field_keys import Command

    assert "FIRST in SSHCONTROL_FIELD_KEYS" in Command.help
    assert "remove the old key" in Command.help
