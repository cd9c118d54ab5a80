"""Secrets at rest and in what the model sees: every tool result, every table, the database file.

``columns_holding`` reads every row of every table as the database returns it and reports the
columns from which the secret can be recovered (plain, base64, hex, reversed: ``tests.leaks``).
Tests that promise a secret is never stored (``test_oauth``'s accepted tokens, the end-to-end
test below) use it; a test here shows it finds what is planted, however it is encoded.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import connection

from hosts.models import Credential, Host
from tests.database import raw_sqlite_bytes
from tests.hostkeys import trust
from tests.leaks import recoverable
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]
WRONG_PASSWORD = "refused-" + secrets.token_hex(8)  # a stored password the server turns down


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


def private_scalar(key_text: str, passphrase: str | None = None) -> bytes:
    """The secret part of an ed25519 private key (its 32-byte seed), whatever text it came in."""
    loaded = serialization.load_ssh_private_key(
        key_text.encode(), passphrase.encode() if passphrase else None
    )
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    return loaded.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_no_tool_result_table_or_database_file_holds_a_credential_secret(
    as_client: AsClient, make_host: Callable[..., Host], sshd: SshServer, sudoers: None
) -> None:
    """The model's whole view (results, errors, tool list) after real calls with every kind of secret."""
    assert sshd.encrypted_key is not None
    password = make_host("pw")
    key = make_host("key", auth="ed25519")
    wrong = make_host("wrong", password=WRONG_PASSWORD)
    sealed = Credential(name="sealed-cred", kind=Credential.Kind.PRIVATE_KEY)
    sealed.set_secret(sshd.encrypted_key.read_text())
    sealed.set_passphrase(sshd.encrypted_key_passphrase)
    sealed.save()
    locked = Host.objects.create(
        name="locked", address=sshd.address, port=sshd.port, username=sshd.user, credential=sealed
    )
    for host_key in sshd.host_public_keys():
        trust(locked, host_key)
    for registered in (password, key, wrong, locked):
        credential = registered.credential
        assert credential is not None
        credential.set_sudo_password(sshd.password)
        credential.save()
    agent = as_client("agent", hosts=[password, key, wrong, locked], can_sudo=True)

    seen = [agent.run(agent.client.list_tools()).model_dump_json()]
    for name in ("pw", "key", "wrong", "locked"):
        calls: list[tuple[str, dict[str, Any]]] = [
            ("ssh_connect", {"host": name}),
            ("ssh_execute", {"host": name, "command": "echo hi"}),
            ("ssh_execute", {"host": name, "command": "id -u", "sudo": True}),
            ("ssh_list_files", {"host": name}),
            ("ssh_status", {}),
            ("ssh_list_hosts", {}),
        ]
        for tool, arguments in calls:
            seen.append(agent.call(tool, **arguments).model_dump_json())
    # Control: the calls ran (as root too) and the refused password was reported, not shown.
    assert agent.ok("ssh_execute", host="locked", command="id -u", sudo=True)["stdout"] == "0\n"
    assert "authentication failed" in agent.error("ssh_execute", host="wrong", command="true").lower()
    # A command that prints the password (without naming it) has it redacted.
    octal = "".join(f"\\{ord(c):03o}" for c in sshd.password)
    printed = agent.call("ssh_execute", host="pw", command=f"printf '{octal}'")
    assert printed.structured_content is not None and printed.structured_content["stdout"] == "[REDACTED]"
    seen.append(printed.model_dump_json())

    blob = "\n".join(seen).encode()
    scalars = [private_scalar(sshd.private_key_text("ed25519"))]
    scalars.append(private_scalar(sshd.encrypted_key.read_text(), sshd.encrypted_key_passphrase))
    texts = [sshd.password, WRONG_PASSWORD, sshd.encrypted_key_passphrase]
    texts += [encoded for scalar in scalars for encoded in (scalar.hex(), base64.b64encode(scalar).decode())]
    assert [text for text in texts if recoverable(text, blob)] == []
    assert [text for text in texts if columns_holding(text)] == []
    assert [text for text in texts if in_the_database_file(text)] == []
    raw = raw_sqlite_bytes(str(connection.settings_dict["NAME"])) if connection.vendor == "sqlite" else b""
    assert [scalar for scalar in scalars if scalar in blob or scalar in raw] == []
