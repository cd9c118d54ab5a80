"""Is a secret anywhere in the database? A scan of every column of every table, and its own tests.

``columns_holding`` reads every row of every table as the database returns it and reports the
columns from which the secret can be recovered (plain, base64, hex, reversed: ``tests.leaks``).
Tests that promise a secret is never stored (``test_oauth``'s accepted tokens) use it; the tests
here show it finds what is planted, in any table and column, however it is encoded.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from django.db import connection

from hosts.models import Host
from tests.database import raw_sqlite_bytes
from tests.leaks import recoverable


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, default=str).encode()  # JSON columns come back as dicts on PostgreSQL


def columns_holding(secret: str) -> list[str]:
    """``table.column`` of each column holding ``secret`` in a row, in an encoding ``tests.leaks`` knows."""
    found: set[str] = set()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - our own tables
            columns = [column[0] for column in cursor.description]
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    if value is not None and recoverable(secret, _as_bytes(value)):
                        found.add(f"{table}.{column}")
    return sorted(found)


def in_the_database_file(secret: str) -> bool:
    """On SQLite, whether the database file or its write-ahead log holds ``secret`` (deleted rows too)."""
    if connection.vendor != "sqlite":
        return False
    return secret.encode() in raw_sqlite_bytes(str(connection.settings_dict["NAME"]))


def test_the_scan_finds_a_secret_planted_in_any_column_plain_or_encoded(transactional_db: None) -> None:
    plain, encoded, absent = (secrets.token_urlsafe(24) for _ in range(3))
    Host.objects.create(name="plain", address="127.0.0.1", username="u", description=f"note {plain} end")
    wrapped = base64.b64encode(encoded.encode()).decode()
    Host.objects.create(name="encoded", address="127.0.0.1", username=wrapped)
    assert columns_holding(plain) == ["hosts_host.description"]
    assert columns_holding(encoded) == ["hosts_host.username"]
    assert columns_holding(absent) == []
    if connection.vendor == "sqlite":
        assert in_the_database_file(plain) and not in_the_database_file(absent)
