from __future__ import annotations

import pytest
from django.db import connection

from hosts import crypto
from hosts.models import Credential
from tests.database import raw_sqlite_bytes

SECRET = "Plain-Text-Password-4711"


def test_it_round_trips_a_secret() -> None:
    stored = crypto.encrypt(SECRET)
    assert stored != SECRET
    assert crypto.decrypt(stored) == SECRET


def test_it_prefixes_ciphertexts_and_is_idempotent() -> None:
    stored = crypto.encrypt(SECRET)
    assert stored.startswith("sshc:v1:")
    assert crypto.encrypt(stored) == stored


def test_it_refuses_to_decrypt_an_unprefixed_value() -> None:
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(SECRET)


@pytest.mark.django_db
def test_it_never_writes_the_plaintext_to_the_database() -> None:
    credential = Credential(name="db", kind=Credential.Kind.PRIVATE_KEY)
    credential.set_secret(SECRET)
    credential.set_passphrase(SECRET + "-passphrase")
    credential.save()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret_encrypted, passphrase_encrypted FROM hosts_credential WHERE id = %s",
            [credential.pk],
        )
        raw_secret, raw_passphrase = cursor.fetchone()
        cursor.execute("SELECT * FROM hosts_credential")
        every_column = repr(cursor.fetchall())

    assert raw_secret.startswith(crypto.PREFIX)
    assert raw_passphrase.startswith(crypto.PREFIX)
    assert SECRET not in every_column
    assert Credential.objects.get(pk=credential.pk).secret() == SECRET
    assert Credential.objects.get(pk=credential.pk).passphrase() == SECRET + "-passphrase"


@pytest.mark.django_db(transaction=True)
def test_it_never_writes_the_plaintext_to_the_database_file() -> None:
    name = str(connection.settings_dict["NAME"])
    if connection.vendor != "sqlite" or "memory" in name:
        pytest.skip("the test database is not an SQLite file")
    credential = Credential(name="on-disk", kind=Credential.Kind.PASSWORD)
    credential.set_secret(SECRET)
    credential.save()
    # Committed (transaction=True); with WAL the row may still be in the -wal file, so read both.
    data = raw_sqlite_bytes(name)
    assert credential.secret_encrypted.encode() in data
    assert SECRET.encode() not in data
