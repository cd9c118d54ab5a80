"""libssh2 (ssh2-python) on many hosts from one thread: the floor of a C-library batch path.

Run by ``bench/fanout.py --libssh2`` with the references' Python (ssh2-python is not a project
dependency). Per host, what a production path would have to do:

- a non-blocking session (``set_blocking(False)``) driven by ``fanout_loop``'s epoll loop,
  waiting in the directions ``block_directions()`` gives after each LIBSSH2_ERROR_EAGAIN;
- the host key checked: the ``hostkey()`` blob must equal the pinned ed25519 key, else refused;
- public-key authentication from key material in memory (``userauth_publickey_frommemory``);
- each command on its own channel: open, exec, read stdout and stderr to EOF, close, wait for
  the peer's close, exit status. With ``expect`` in the spec, stdout must start with it (the
  product's wire form prints its process group first).

The spec (one JSON line): ``parallel``, ``command``, ``expect`` (or null), ``hosts``: each
``port``, ``user``, ``key`` (OpenSSH private key text), ``host_key`` (base64 public key blob).
"""

from __future__ import annotations

import selectors

from fanout_loop import Host, HostKeyMismatch, Step, connected, fd, make, nonblocking_socket, serve
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import (
    LIBSSH2_METHOD_CRYPT_CS,
    LIBSSH2_METHOD_CRYPT_SC,
    LIBSSH2_METHOD_HOSTKEY,
    LIBSSH2_SESSION_BLOCK_INBOUND,
    LIBSSH2_SESSION_BLOCK_OUTBOUND,
    Session,
)

EAGAIN = LIBSSH2_ERROR_EAGAIN
# As sshcontrol offers them: aes128-gcm first, the pinned key's type (libssh2's default is chacha20).
CIPHERS = "aes128-gcm@openssh.com,aes128-ctr"


def blocked(host: Host) -> int:
    """The selector events libssh2 waits for (0 if it names none: run again)."""
    directions = host.session.block_directions()
    events = selectors.EVENT_READ if directions & LIBSSH2_SESSION_BLOCK_INBOUND else 0
    return events | (selectors.EVENT_WRITE if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND else 0)


def connect(host: Host) -> Step:
    host.sock, pending = nonblocking_socket(host.port)
    if pending:
        yield selectors.EVENT_WRITE
        connected(host.sock)
    session = host.session = Session()
    session.set_blocking(False)
    session.method_pref(LIBSSH2_METHOD_HOSTKEY, "ssh-ed25519")
    session.method_pref(LIBSSH2_METHOD_CRYPT_CS, CIPHERS)
    session.method_pref(LIBSSH2_METHOD_CRYPT_SC, CIPHERS)
    while session.handshake(host.sock) == EAGAIN:
        yield blocked(host)
    blob, _kind = session.hostkey()
    if blob != host.host_key:
        raise HostKeyMismatch(f"port {host.port}")
    while session.userauth_publickey_frommemory(host.user, host.key) == EAGAIN:
        yield blocked(host)
    if not session.userauth_authenticated():
        raise PermissionError(f"port {host.port}: not authenticated")


def execute(host: Host) -> Step:
    session = host.session
    while (channel := session.open_session()) == EAGAIN:
        yield blocked(host)
    while channel.execute(host.command) == EAGAIN:
        yield blocked(host)
    stdout, stderr = bytearray(), bytearray()
    while True:
        size, data = channel.read()
        while size > 0:
            stdout += data
            size, data = channel.read()
        esize, edata = channel.read_stderr()
        while esize > 0:
            stderr += edata
            esize, edata = channel.read_stderr()
        if channel.eof():
            break
        yield blocked(host)
    while channel.close() == EAGAIN:
        yield blocked(host)
    while channel.wait_closed() == EAGAIN:
        yield blocked(host)
    status = channel.get_exit_status()
    if status != 0:
        raise RuntimeError(f"port {host.port}: exit status {status}, stderr {bytes(stderr[:200])!r}")
    if host.expect is not None and not stdout.startswith(host.expect):
        raise RuntimeError(f"port {host.port}: unexpected stdout {bytes(stdout[:200])!r}")


if __name__ == "__main__":
    serve(connect, execute, make, fd)
