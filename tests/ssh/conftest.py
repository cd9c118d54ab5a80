"""Connections to the suite's sshd, shared by the SSH runtime tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sshlib.connect import Connection, ConnectSpec, open_connection
from sshlib.execute import ExecRequest, run_command
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


def sh(connection: Connection, command: str) -> str:
    """Run ``command`` on the connection; it must succeed: its stdout."""
    result = run_command(connection.client, ExecRequest(command))
    assert result.exit_status == 0, result.stderr
    return result.stdout


@pytest.fixture
def remote_dir(connection: Connection) -> Iterator[str]:
    """An empty directory on the host (loopback: this machine's /tmp), removed after the test."""
    path = f"/tmp/sshc-ssh-{uuid.uuid4().hex}"
    sh(connection, f"mkdir -p {path}")
    yield path
    sh(connection, f"rm -rf {path}")
