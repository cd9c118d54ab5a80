"""Connections to the suite's sshd, shared by the SSH runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sshlib.connect import Connection, ConnectSpec, open_connection
from tests.sshd import SshServer


def trusted(server: SshServer, *kinds: str) -> tuple[tuple[str, str], ...]:
    keys = [server.host_key(kind) for kind in kinds] if kinds else server.host_public_keys()
    return tuple((key.get_name(), key.get_base64()) for key in keys)


def password_spec(server: SshServer, **overrides: object) -> ConnectSpec:
    fields: dict[str, object] = {
        "address": server.address,
        "port": server.port,
        "username": server.user,
        "password": server.password,
        "trusted_keys": trusted(server),
        "connect_timeout": 5.0,
    }
    fields.update(overrides)
    return ConnectSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def connection(sshd: SshServer) -> Iterator[Connection]:
    """One authenticated connection, shared like a held session is in production."""
    conn = open_connection(password_spec(sshd))
    yield conn
    conn.close()
