"""libssh (ssh-python) on many hosts from one thread: the same client as ``libssh2_fanout``.

Run by ``bench/fanout.py --libssh`` with the references' Python. The same per-host work and
spec as ``libssh2_fanout.py``: a non-blocking session (``set_blocking(False)``, SSH_AGAIN,
waiting as ``get_poll_flags()`` says) on ``fanout_loop``'s epoll loop, the server's key
compared with the pinned ed25519 blob, public-key authentication from the key text in memory
(``import_privkey_base64``), each command on its own channel read to EOF, its exit state
(``ssh_channel_get_exit_state``, which does not block) and the channel closed.
"""

from __future__ import annotations

import base64
import selectors
from typing import Any

from fanout_loop import Host, HostKeyMismatch, Step, connected, fd, make, nonblocking_socket, serve
from ssh import options
from ssh.error_codes import SSH_AGAIN
from ssh.exceptions import EOF
from ssh.key import import_privkey_base64
from ssh.session import SSH_AUTH_AGAIN, SSH_AUTH_SUCCESS, SSH_READ_PENDING, SSH_WRITE_PENDING, Session

# As sshcontrol offers them: aes128-gcm first; only the pinned key's type.
CIPHERS = "aes128-gcm@openssh.com,aes128-ctr"


def blocked(host: Host) -> int:
    """The selector events libssh waits for (0 if it names none: run again)."""
    flags = host.session.get_poll_flags()
    events = selectors.EVENT_READ if flags & SSH_READ_PENDING else 0
    return events | (selectors.EVENT_WRITE if flags & SSH_WRITE_PENDING else 0) or selectors.EVENT_READ


def connect(host: Host) -> Step:
    host.sock, pending = nonblocking_socket(host.port)
    if pending:
        yield selectors.EVENT_WRITE
        connected(host.sock)
    session = host.session = Session()
    session.options_set(options.HOST, "127.0.0.1")
    session.options_set_port(host.port)
    session.options_set(options.USER, host.user)
    session.options_set(options.HOSTKEYS, "ssh-ed25519")
    session.options_set(options.CIPHERS_C_S, CIPHERS)
    session.options_set(options.CIPHERS_S_C, CIPHERS)
    session.set_socket(host.sock)
    session.set_blocking(False)
    while session.connect() == SSH_AGAIN:
        yield blocked(host)
    blob = base64.b64decode(session.get_server_publickey().export_pubkey_base64())
    if blob != host.host_key:
        raise HostKeyMismatch(f"port {host.port}")
    key = import_privkey_base64(host.key)
    while (rc := session.userauth_publickey(key)) == SSH_AUTH_AGAIN:
        yield blocked(host)
    if rc != SSH_AUTH_SUCCESS:
        raise PermissionError(f"port {host.port}: authentication {rc}")


def drained(channel: Any, into: bytearray, is_stderr: bool) -> bool:
    """Read what a stream has now into ``into``; True once it is at EOF (ssh-python raises EOF)."""
    try:
        size, data = channel.read_nonblocking(is_stderr=is_stderr)
        while size > 0:
            into += data
            size, data = channel.read_nonblocking(is_stderr=is_stderr)
    except EOF:
        return True
    return bool(channel.is_eof())


def execute(host: Host) -> Step:
    session = host.session
    channel = session.channel_new()
    while channel.open_session() == SSH_AGAIN:
        yield blocked(host)
    while channel.request_exec(host.command) == SSH_AGAIN:
        yield blocked(host)
    stdout, stderr = bytearray(), bytearray()
    while not (drained(channel, stdout, False) & drained(channel, stderr, True)):
        yield blocked(host)
    while (state := channel.get_exit_state())[0] == SSH_AGAIN:
        yield blocked(host)
    while channel.close() == SSH_AGAIN:
        yield blocked(host)
    status = channel.get_exit_status()
    if status != 0:
        raise RuntimeError(f"port {host.port}: exit {status} {state}, stderr {bytes(stderr[:200])!r}")
    if host.expect is not None and not stdout.startswith(host.expect):
        raise RuntimeError(f"port {host.port}: unexpected stdout {bytes(stdout[:200])!r}")


if __name__ == "__main__":
    serve(connect, execute, make, fd)
