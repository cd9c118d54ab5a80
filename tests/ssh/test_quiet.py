"""Idle held connections sleep (sshlib/quiet.py), yet close, notice a dead server and reconnect at once.

The poll is set far beyond every deadline below: a close or a server's end that did not wake
the transport thread would only be noticed after ``IDLE_POLL_SECONDS``, and the test would fail.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator

import paramiko
import pytest

from sshlib import quiet
from sshlib.connect import Connection, open_connection
from sshlib.execute import ExecRequest, run_command
from sshlib.quiet import QuietTransport, idle_poll_seconds
from sshlib.sessions import SessionRegistry
from tests.polling import wait_until
from tests.ssh.conftest import password_spec
from tests.sshd import SshServer

LONG = 600.0


@pytest.fixture
def long_poll(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(quiet, "IDLE_POLL_SECONDS", LONG)
    yield


def transport_of(conn: Connection) -> paramiko.Transport:
    transport = conn.client.get_transport()
    assert transport is not None
    return transport


def test_it_polls_at_least_as_often_as_the_keepalive_is_due() -> None:
    # paramiko sends its keepalive only when a read times out: a longer poll would delay it.
    assert idle_poll_seconds(30) == 30.0
    assert idle_poll_seconds(10) == 10.0
    assert idle_poll_seconds(0) == quiet.IDLE_POLL_SECONDS
    assert idle_poll_seconds(3600) == quiet.IDLE_POLL_SECONDS


def test_closing_wakes_a_thread_blocked_in_a_long_read() -> None:
    # The one seam: a QuietTransport over a socket pair, its thread started by hand.
    ours, theirs = socket.socketpair()
    transport = QuietTransport(ours)
    transport.sock.settimeout(LONG)
    transport.active = True  # type: ignore[attr-defined]  # as start_client() would; no handshake here
    ended: list[type[BaseException]] = []

    def read() -> None:
        try:
            transport.packetizer.read_all(4)
        except EOFError as exc:  # what paramiko's thread meets when its transport closes
            ended.append(type(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: reader.is_alive(), message="the reader to block")
    transport.close()
    reader.join(5)
    assert not reader.is_alive(), "close() left the read blocked"
    assert ended == [EOFError]
    theirs.close()


def test_a_held_connection_sleeps_between_reads_once_authenticated(sshd: SshServer) -> None:
    conn = open_connection(password_spec(sshd, keepalive_seconds=30))
    try:
        transport = transport_of(conn)
        assert isinstance(transport, QuietTransport)
        assert transport.sock.gettimeout() == 30.0
        assert run_command(conn.client, ExecRequest("echo awake")).stdout == "awake\n"
    finally:
        conn.close()


def test_closing_an_idle_connection_ends_its_thread_at_once(sshd: SshServer, long_poll: None) -> None:
    conn = open_connection(password_spec(sshd, keepalive_seconds=0))
    transport = transport_of(conn)
    assert transport.sock.gettimeout() == LONG
    wait_until(lambda: transport.is_alive(), message="the transport thread to run")
    conn.close()
    wait_until(lambda: not transport.is_alive(), timeout=5, message="the transport thread to end")


def test_an_idle_connection_notices_its_server_end_at_once(sshd: SshServer, long_poll: None) -> None:
    registry = SessionRegistry()
    spec = password_spec(sshd, keepalive_seconds=0)
    session = registry.open("quiet-1", "host", spec)
    try:
        old = transport_of(session.connection)
        # The server's end of this one connection is torn down (a crashed or restarted server):
        # its socket destroyed by the kernel, which resets the connection. Other tests' sessions
        # to the same sshd are left alone.
        assert isinstance(old.sock, socket.socket)
        local_port = old.sock.getsockname()[1]
        subprocess.run(
            ["ss", "-K", "src", f"{sshd.address}:{sshd.port}", "dst", f"{sshd.address}:{local_port}"],
            capture_output=True,
            check=True,
        )
        wait_until(lambda: not old.is_active(), timeout=5, message="the client to see the server go")
        wait_until(lambda: not old.is_alive(), timeout=5, message="the transport thread to end")
        client, reconnected = session.client(lambda: spec)
        assert reconnected
        assert run_command(client, ExecRequest("echo again")).stdout == "again\n"
    finally:
        registry.close_all()
