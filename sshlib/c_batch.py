"""Many commands on many hosts from one thread: non-blocking libssh2 sessions on one epoll loop.

The batch engine of ``ssh_execute_many`` (issue 13, docs/benchmarks.md "A C SSH library's
floor"): paramiko costs a Python thread and 1.4-1.8 CPU-seconds per 200 logins; one loop
over libssh2 (ssh2-python) costs a fraction of that. The paramiko path
(``sshlib.connect`` / ``sshlib.execute``) stays for everything else.

How it runs:

- One loop thread per process (``engine()``; started at its first job, a daemon named
  ``sshcontrol-cbatch``) owns every libssh2 session: no other thread ever touches one.
  Callers hand jobs over through a queue and an eventfd that wakes the loop, and wait for
  their outcomes on a queue of their own (``BatchEngine.run_iter`` / ``run_many``), on which
  the ``on_started`` callbacks also arrive: callbacks run on the caller's thread, never the loop's.
- Each job names a pool ``key`` (hashable, the caller's): jobs with the same key share one
  authenticated connection, one channel per command, and a later batch reuses it. A key
  whose spec changed (another credential, other trusted keys) gets a new connection. An idle
  connection found dead (EOF, socket error, failed keepalive) is replaced before it is used;
  a command whose channel could not be opened on a connection that turned out dead is retried
  once on a new one (it had not started). A command that had started is never retried
  (``ConnectionLost``).
- Host keys: the server's key blob must equal one of ``spec.trusted_keys``, and only the
  trusted keys' algorithms are offered, so a server with several keys proves one we trust.
  It is checked right after the key exchange, before any credential is sent. A refusal
  raises what the paramiko path raises (``HostKeyChanged``, or ``HostKeyUnknown`` when
  nothing is trusted), with the same message and ``host_ref``. This engine never trusts a
  key on first use: a spec with no trusted keys is refused even with ``trust_on_first_use``;
  callers send such hosts (and any spec with ``hops``, refused here with ValueError) the
  paramiko way.
- The command travels exactly as on the paramiko path (``sshlib.execute.remote_command``:
  the process group line, cd, eval or sudo), stdin is written then EOF sent, output is
  captured by ``sshlib.capture``. At ``request.timeout``, or when the job's ``cancel`` is
  set, the process group is killed from a second channel of the same connection
  (``sshlib.execute.kill_script``), as the paramiko path does.
- Keepalives (``spec.keepalive_seconds``) go out from the loop on idle connections.

Nothing secret is logged, put in an exception or in a repr: errors are ``sshlib.errors``
types with the paramiko path's messages.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import itertools
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.exceptions import SocketDisconnectError, SocketRecvError, SocketSendError, SSH2Error
from ssh2.session import (
    LIBSSH2_METHOD_CRYPT_CS,
    LIBSSH2_METHOD_CRYPT_SC,
    LIBSSH2_METHOD_HOSTKEY,
    LIBSSH2_SESSION_BLOCK_INBOUND,
    LIBSSH2_SESSION_BLOCK_OUTBOUND,
    Session,
)

from sshlib import ciphers
from sshlib.capture import Capture, StdoutCapture
from sshlib.connect import HOST_KEY_ALGORITHMS, ConnectSpec, decrypted_private_key
from sshlib.errors import (
    AuthenticationFailed,
    ChannelFailed,
    ConnectFailed,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    SeenKey,
    SshError,
    one_line,
)
from sshlib.execute import ExecRequest, ExecResult, kill_script, kill_word, remote_command
from sshlib.private_keys import fingerprint_of_blob

log = logging.getLogger(__name__)

EAGAIN: int = LIBSSH2_ERROR_EAGAIN
# What a step of a job yields: the selector events its connection's socket must show before
# it can go on, or 0 (step again at the next tick).
Step = Generator[int, None, None]

# Every active job is stepped at least this often (seconds): it notices its deadline and its
# cancel flag, and output libssh2 already read from the socket for another channel of the
# same session (the socket then stays quiet) is not left waiting.
TICK = 0.05
_READ_SIZE = 1 << 16
_WRITE_SIZE = 1 << 16
_KILL_WAIT = 5.0  # how long the kill channel may take (its script waits up to ~1 s)
_DRAIN_AFTER_KILL = 1.0  # the killed command's last output and exit-signal
_ROUNDS = 4  # rounds over one connection's jobs while they still make progress
# Channels one connection runs at once (OpenSSH's MaxSessions defaults to 10; a timed-out
# command needs a second one for its kill).
CHANNELS_PER_CONNECTION = 8
CONNECTS_AT_ONCE = 64
IDLE_TIMEOUT = 900.0

_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256")
_CIPHERS = (*ciphers.FAST_FIRST, "aes128-ctr", "aes192-ctr", "aes256-ctr", "chacha20-poly1305@openssh.com")


@dataclass(frozen=True)
class Job:
    """One command on one host. ``key`` names the pooled connection it runs on (the caller's)."""

    key: Hashable
    spec: ConnectSpec
    request: ExecRequest
    cancel: threading.Event | None = None
    on_started: Callable[[int], None] | None = field(default=None, compare=False)
    # Told the host key its connection was verified with, and whether that connection was
    # opened for this job (False: a pooled one reused), when the job gets its channel.
    on_connection: Callable[[SeenKey, bool], None] | None = field(default=None, compare=False)


Outcome = ExecResult | SshError


# -- connections -------------------------------------------------------------------------------


class _Conn:
    """One pooled connection (loop thread only)."""

    def __init__(self, key: Hashable, spec: ConnectSpec, number: int) -> None:
        self.key = key
        self.spec = spec
        self.number = number  # the engine's count of connections opened, for tests and stats
        self.sock: socket.socket | None = None
        self.session: Any = None
        self.state = "new"  # new -> connecting -> ready | failed; dead once found broken
        self.waiting: deque[_Run] = deque()  # jobs for this connection not yet on a channel
        self.runs: set[_Run] = set()  # jobs on a channel of it
        self.connect_step: Step | None = None
        self.connect_deadline = 0.0
        self.last_used = time.monotonic()
        self.next_keepalive = 0.0
        self.progress = 0
        self.registered = 0  # the events its socket is registered for
        self.registered_sock: socket.socket | None = None  # the socket registered (a connect may try several)
        self.connect_waits = 0  # the events the connect step waits for
        self.last_step = 0.0
        self.host_key: SeenKey | None = None  # the key it was verified with, once it was

    @property
    def where(self) -> str:
        return f"{self.spec.address}:{self.spec.port}"

    def blocked(self) -> int:
        """The selector events libssh2 waits for (0 if it names none: step again at the next tick)."""
        directions = self.session.block_directions()
        events = selectors.EVENT_READ if directions & LIBSSH2_SESSION_BLOCK_INBOUND else 0
        return events | (selectors.EVENT_WRITE if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND else 0)

    def call(self, operation: Callable[[], Any]) -> Generator[int, None, Any]:
        """Run a libssh2 call until it stops saying EAGAIN; its result."""
        while (result := operation()) == EAGAIN:
            yield self.blocked()
        self.progress += 1
        return result

    def peer_closed(self) -> bool:
        """An idle connection's socket shows EOF or an error (the server went away)."""
        if self.sock is None:
            return True
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def close(self) -> None:
        if self.session is not None and self.state == "ready":
            with contextlib.suppress(SSH2Error, OSError):
                self.session.set_blocking(False)
                self.session.disconnect()
        self.session = None
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.state = "dead" if self.state == "ready" else self.state


def _key_type(blob: bytes) -> str:
    """The algorithm name at the start of an SSH public key blob (``ssh-ed25519``...)."""
    size = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + size].decode("ascii", errors="replace")


def _seen(blob: bytes) -> SeenKey:
    return SeenKey(
        key_type=_key_type(blob),
        public_key=base64.b64encode(blob).decode(),
        fingerprint=fingerprint_of_blob(blob),
    )


def _host_key_algorithms(spec: ConnectSpec, supported: Sequence[str]) -> str:
    """The host key algorithms to offer: the trusted keys' own, in the paramiko path's order."""
    allowed: set[str] = set()
    for kind, _blob in spec.trusted_keys:
        allowed.update(_RSA_ALGORITHMS if kind in ("ssh-rsa", *_RSA_ALGORITHMS) else (kind,))
    return ",".join(a for a in HOST_KEY_ALGORITHMS if a in allowed and a in supported)


def _key_for_libssh2(spec: ConnectSpec) -> bytes | None:
    """The private key as unencrypted OpenSSH text for libssh2 (decrypted here: same errors as paramiko's)."""
    if spec.private_key is None:
        return None
    key = decrypted_private_key(spec.private_key, spec.passphrase)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def _trusted_blobs(spec: ConnectSpec) -> set[bytes]:
    blobs: set[bytes] = set()
    for _kind, text in spec.trusted_keys:
        with contextlib.suppress(ValueError):
            blobs.add(base64.b64decode(text))
    return blobs


def _tcp(conn: _Conn) -> Step:
    """The connection's non-blocking TCP socket, connected."""
    spec, where = conn.spec, conn.where
    try:
        try:
            infos = socket.getaddrinfo(
                spec.address, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            # A name: resolved on a helper thread, so a slow DNS server never stalls the loop.
            lookup = _resolver().submit(socket.getaddrinfo, spec.address, spec.port, type=socket.SOCK_STREAM)
            while not lookup.done():
                yield 0
            infos = lookup.result()
    except socket.gaierror as exc:
        raise ConnectFailed(f"cannot resolve {spec.address}: {exc.strerror}") from None
    code = 0
    for family, kind, proto, _name, address in infos:  # each address in turn, as create_connection does
        if conn.sock is not None:
            conn.sock.close()
        sock = conn.sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            yield selectors.EVENT_WRITE
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not code:
            return
    raise _socket_error(code, where)


_resolver_pool: ThreadPoolExecutor | None = None
_resolver_lock = threading.Lock()


def _resolver() -> ThreadPoolExecutor:
    global _resolver_pool
    with _resolver_lock:
        if _resolver_pool is None:
            _resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sshcontrol-cbatch-dns")
        return _resolver_pool


def _new_session(conn: _Conn) -> Any:
    """A non-blocking libssh2 session offering the trusted key types and the fast ciphers first."""
    spec, where = conn.spec, conn.where
    session = conn.session = Session()
    session.set_blocking(False)
    if spec.trusted_keys:
        algorithms = _host_key_algorithms(spec, session.supported_algs(LIBSSH2_METHOD_HOSTKEY))
        if not algorithms:
            raise ConnectFailed(f"SSH handshake with {where} failed: no trusted host key type is supported")
        session.method_pref(LIBSSH2_METHOD_HOSTKEY, algorithms)
    offered = session.supported_algs(LIBSSH2_METHOD_CRYPT_CS)
    cipher_list = ",".join(c for c in _CIPHERS if c in offered)
    session.method_pref(LIBSSH2_METHOD_CRYPT_CS, cipher_list)
    session.method_pref(LIBSSH2_METHOD_CRYPT_SC, cipher_list)
    return session


def _connect(conn: _Conn) -> Step:
    """TCP, key exchange, host key check, authentication. Raises an SshError on failure."""
    spec, where = conn.spec, conn.where
    yield from _tcp(conn)
    sock, session = conn.sock, _new_session(conn)
    try:
        yield from conn.call(lambda: session.handshake(sock))
    except SSH2Error as exc:
        if spec.trusted_keys and type(exc).__name__ in (
            "KeyExchangeError",
            "SessionHandshakeError",
            "KexFailureError",
        ):
            # Perhaps the server offers none of the trusted key types: see what it does offer.
            seen = yield from _scan(conn)
            if seen is not None:
                raise HostKeyChanged(
                    seen,
                    f"host key changed: server offers none of the trusted key types; "
                    f"it presented {seen.key_type} {seen.fingerprint}",
                    host_ref=spec.host_ref,
                ) from None
        raise ConnectFailed(f"SSH handshake with {where} failed: {_describe(exc)}") from None
    blob, _type = session.hostkey()
    seen = _seen(bytes(blob))
    if not spec.trusted_keys:
        raise HostKeyUnknown(seen, host_ref=spec.host_ref)
    if bytes(blob) not in _trusted_blobs(spec):
        raise HostKeyChanged(seen, host_ref=spec.host_ref)
    conn.host_key = seen
    yield from _authenticate(conn)
    if spec.keepalive_seconds > 0:
        session.keepalive_config(False, spec.keepalive_seconds)
        conn.next_keepalive = time.monotonic() + spec.keepalive_seconds


def _scan(conn: _Conn) -> Generator[int, None, SeenKey | None]:
    """The key the server presents when any algorithm is allowed (a second, throw-away connection).

    Its socket is not the one the loop watches for ``conn``: it is polled at each tick.
    """
    scan = _Conn(conn.key, ConnectSpec(address=conn.spec.address, port=conn.spec.port, username=""), 0)
    try:
        for _events in _connect(scan):
            yield 0
    except HostKeyUnknown as exc:
        return exc.seen
    except (SshError, SSH2Error, OSError):
        return None
    finally:
        scan.close()
    return None


def _authenticate(conn: _Conn) -> Step:
    spec, session = conn.spec, conn.session
    key = _key_for_libssh2(spec)
    if key is None and spec.password is None:
        raise AuthenticationFailed("no password or private key given")
    if key is not None:
        with contextlib.suppress(SSH2Error):
            yield from conn.call(lambda: session.userauth_publickey_frommemory(spec.username, key))
    if not session.userauth_authenticated() and spec.password is not None:
        password = spec.password
        with contextlib.suppress(SSH2Error):
            yield from conn.call(lambda: session.userauth_password(spec.username, password))
    if not session.userauth_authenticated():
        raise AuthenticationFailed(f"authentication failed for user {spec.username}")


def _socket_error(code: int, where: str) -> ConnectFailed:
    if code == errno.ECONNREFUSED:
        return ConnectFailed(f"connection refused by {where}")
    return ConnectFailed(f"cannot connect to {where}: {os.strerror(code)}")


def _describe(exc: BaseException) -> str:
    text = one_line(exc)
    return text if text != type(exc).__name__ else f"libssh2 {text}"


# -- running one command -----------------------------------------------------------------------


_SOCKET_ERRORS = (SocketDisconnectError, SocketRecvError, SocketSendError)


class _Gone(Exception):
    """The connection broke under a job (socket error, EOF)."""


Message = tuple[int, str, Any]  # (job index, "done" | "started" | "connection", payload)


class _Outbox:
    """Where the messages of one ``run_events`` call go: gathered during a turn of the loop, then
    handed over together when it ends (``BatchEngine._flush``).

    One hand-over per turn instead of one per message: 200 hosts send ~600 messages a batch,
    and each ``put`` woke the caller's thread to take one, under the GIL, while the loop ran.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[list[Message]] = queue.SimpleQueue()
        self.pending: list[Message] = []  # loop thread only
        self.dirty: set[_Outbox] | None = None  # the engine's outboxes to flush (set by the loop)

    def put(self, message: Message) -> None:
        self.pending.append(message)
        if self.dirty is not None:
            self.dirty.add(self)
        else:  # not yet accepted by a loop (cannot happen in practice): hand it over at once
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.queue.put(self.pending)
            self.pending = []


class _Run:
    """A job in the engine: where its outcome goes, and its progress (loop thread only)."""

    def __init__(self, job: Job, index: int, outbox: _Outbox) -> None:
        self.job = job
        self.index = index
        self.outbox = outbox
        self.retried = False
        self.step: Step | None = None
        self.conn: _Conn | None = None
        self.started = 0.0
        self.deadline = 0.0
        self.executing = False  # the command was sent: never retried from here on
        self.fresh = False  # placed on a connection not yet open (opened for it)
        self.done = False
        self.waits = 0  # the events its last step waits for

    def stop_reason(self, now: float) -> str | None:
        if self.job.cancel is not None and self.job.cancel.is_set():
            return "cancelled"
        if now >= self.deadline:
            return "timed_out"
        return None

    def finish(self, outcome: Outcome) -> None:
        if not self.done:
            self.done = True
            self.outbox.put((self.index, "done", outcome))


def _not_run(cancelled: bool) -> ExecResult:
    return ExecResult(
        exit_status=None,
        signal=None,
        stdout="",
        stderr="",
        stdout_bytes=0,
        stderr_bytes=0,
        stdout_truncated=False,
        stderr_truncated=False,
        timed_out=not cancelled,
        cancelled=cancelled,
        duration_ms=0.0,
    )


def _open_channel(conn: _Conn, command: str) -> Generator[int, None, Any]:
    session = conn.session
    channel = yield from conn.call(session.open_session)
    yield from conn.call(lambda: channel.execute(command))
    return channel


def _read_some(conn: _Conn, channel: Any, stdout: StdoutCapture | bytearray, stderr: Capture | None) -> bool:
    """Whatever output is ready on ``channel``; True if there was any."""
    got = False
    while True:
        size, data = channel.read(_READ_SIZE)
        if size <= 0:
            break
        got = True
        if isinstance(stdout, bytearray):
            stdout += data
        else:
            stdout.add(data)
    while True:
        size, data = channel.read_stderr(_READ_SIZE)
        if size <= 0:
            break
        got = True
        if stderr is not None:
            stderr.add(data)
    if got:
        conn.progress += 1
    return got


def _close(conn: _Conn, channel: Any, until: float) -> Step:
    """Close our side and wait (up to ``until``) for the server's close, which brings the exit status."""
    yield from conn.call(channel.close)
    while channel.wait_closed() == EAGAIN:
        if time.monotonic() >= until:
            return
        yield conn.blocked()
    conn.progress += 1


def _kill(conn: _Conn, pgid: int) -> Generator[int, None, str | None]:
    """Kill the process group from a second channel; the signal it took (or None)."""
    until = time.monotonic() + _KILL_WAIT
    try:
        channel = yield from _open_channel(conn, kill_script(pgid))
        yield from conn.call(channel.send_eof)
        output = bytearray()
        while not channel.eof():
            if not _read_some(conn, channel, output, None):
                if time.monotonic() >= until:
                    break
                yield conn.blocked()
        _read_some(conn, channel, output, None)
        yield from _close(conn, channel, until)
    except SSH2Error:
        return None
    return kill_word(bytes(output))


def _execute(run: _Run, conn: _Conn) -> Step:
    """One command on a channel of ``conn``; finishes ``run`` with its result or error."""
    request = run.job.request
    run.started = time.monotonic()
    run.deadline = run.started + max(0.0, request.timeout)
    stdout = StdoutCapture(request.max_output_bytes)
    stderr = Capture(request.max_output_bytes, None, "stderr")
    try:
        channel = yield from _open_channel(conn, remote_command(request))
    except SSH2Error as exc:
        if isinstance(exc, _SOCKET_ERRORS) or conn.peer_closed():
            raise _Gone(f"could not open a channel: {_describe(exc)}") from None
        raise ChannelFailed(f"could not open a channel: {_describe(exc)}") from None
    run.executing = True
    stdin = memoryview(request.stdin or b"")
    eof_sent = False
    stop: str | None = None
    told = False
    try:
        while True:
            if not eof_sent:
                stdin, eof_sent = _feed(conn, channel, stdin)
            got = _read_some(conn, channel, stdout, stderr)
            if not told and stdout.pgid is not None:
                told = True
                run.outbox.put((run.index, "started", stdout.pgid))
            if channel.eof():
                break
            stop = run.stop_reason(time.monotonic())
            if stop is not None:
                break
            if not got:
                yield conn.blocked()
        stdout.finish()
        exit_status, signal = yield from _ending(conn, channel, stdout, stderr, stopped=stop is not None)
    except SSH2Error as exc:
        raise ConnectionLost(
            f"the SSH connection was lost while the command ran; it may have run in part ({_describe(exc)})"
        ) from None
    run.finish(
        ExecResult.captured(
            stdout.capture,
            stderr,
            exit_status=exit_status,
            signal=signal,
            timed_out=stop == "timed_out",
            cancelled=stop == "cancelled",
            duration_ms=(time.monotonic() - run.started) * 1000.0,
        )
    )


def _ending(
    conn: _Conn, channel: Any, stdout: StdoutCapture, stderr: Capture, stopped: bool
) -> Generator[int, None, tuple[int | None, str | None]]:
    """How the command ended, (exit status, signal); a stopped one's process group killed first."""
    if not stopped:
        yield from _close(conn, channel, time.monotonic() + _KILL_WAIT)
        _read_some(conn, channel, stdout, stderr)
        signal = _signal(channel)
        return (None if signal is not None else channel.get_exit_status()), signal
    killed_with: str | None = None
    if stdout.pgid is not None:
        killed_with = yield from _kill(conn, stdout.pgid)
        # Let the dying command's last output and exit-signal arrive before closing.
        until = time.monotonic() + _DRAIN_AFTER_KILL
        while not channel.eof() and time.monotonic() < until:
            if not _read_some(conn, channel, stdout, stderr):
                yield conn.blocked()
        _read_some(conn, channel, stdout, stderr)
    yield from _close(conn, channel, time.monotonic() + _DRAIN_AFTER_KILL)
    return None, _signal(channel) or killed_with


def _feed(conn: _Conn, channel: Any, stdin: memoryview) -> tuple[memoryview, bool]:
    """Write what the channel takes of the command's input, then its end; (what is left, EOF sent)."""
    try:
        while stdin:
            rc, written = channel.write(bytes(stdin[:_WRITE_SIZE]))
            if written > 0:
                stdin = stdin[written:]
                conn.progress += 1
            if rc == EAGAIN or written <= 0:
                return stdin, False
        return stdin, channel.send_eof() != EAGAIN
    except _SOCKET_ERRORS:
        raise
    except SSH2Error:
        return memoryview(b""), True  # the command exited without reading all of its input: not an error


def _cut_off(run: _Run, why: str) -> SshError:
    """The error of a job the engine had to give up: lost if its command had been sent, else not started."""
    if run.executing:
        return ConnectionLost(f"{why} while the command ran; it may have run in part")
    return ChannelFailed(f"{why} before the command started")


def _signal(channel: Any) -> str | None:
    """The exit-signal the server reported (``TERM``...), if any."""
    try:
        _rc, name, *_rest = channel.get_exit_signal()
    except SSH2Error:
        return None
    if not name:
        return None
    text = name.decode("ascii", errors="replace") if isinstance(name, bytes) else str(name)
    return text.removeprefix("SIG") or None


# -- the engine --------------------------------------------------------------------------------


class BatchEngine:
    """The loop thread and its connection pool. Thread-safe; see the module docstring."""

    def __init__(
        self,
        connects_at_once: int = CONNECTS_AT_ONCE,
        channels: int = CHANNELS_PER_CONNECTION,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.connects_at_once = max(1, connects_at_once)
        self.channels = max(1, channels)
        # A pooled connection unused this long is closed by the loop (settable while it runs).
        self.idle_timeout = idle_timeout
        self.connections_opened = 0  # every connection attempt ever made (tests count reconnects)
        self.most_connecting = 0  # the most connects ever in progress at once
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Loop thread only:
        self._pool: dict[Hashable, _Conn] = {}
        self._connecting: set[_Conn] = set()
        self._dirty: set[_Outbox] = set()  # outboxes with messages of this turn
        self._drop_listeners: list[Callable[[Hashable, ConnectSpec], None]] = []
        self._to_connect: deque[_Conn] = deque()
        self._selector = selectors.EpollSelector()
        self._selector.register(self._wake, selectors.EVENT_READ, None)
        self._numbers = itertools.count(1)
        self._housekeeping = 0.0
        self._next_sweep = 0.0  # when the whole pool is next walked for due connections

    # -- the callers' side --

    def run_iter(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Outcome]]:
        """Run ``jobs`` at once; yields (index, result or SshError) as each finishes.

        ``on_started`` callbacks are called from here (the caller's thread). Closing the
        iterator early does not stop the jobs (set their ``cancel``).
        """
        for event in self.run_events(jobs):
            if event is not None:
                yield event

    def run_events(
        self, jobs: Sequence[Job], idle: float | None = None
    ) -> Iterator[tuple[int, Outcome] | None]:
        """``run_iter`` that also yields None after every ``idle`` seconds with nothing finished.

        For a caller with work of its own to do meanwhile (the fleet completes audit rows).
        """
        for job in jobs:
            if job.spec.hops:
                raise ValueError("the batch engine connects directly: a spec with hops goes the paramiko way")
        outbox = _Outbox()
        runs = [_Run(job, index, outbox) for index, job in enumerate(jobs)]
        if runs:
            self._submit(lambda: self._accept(outbox, runs))
        left = len(runs)
        while left:
            try:
                messages = outbox.queue.get(timeout=idle)
            except queue.Empty:
                yield None
                continue
            for index, kind, payload in messages:
                if kind == "started":
                    callback = jobs[index].on_started
                    if callback is not None:
                        callback(payload)
                elif kind == "connection":
                    told = jobs[index].on_connection
                    if told is not None:
                        told(*payload)
                else:
                    left -= 1
                    yield index, payload

    def run_many(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Run ``jobs`` at once; their outcomes in order."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        for index, outcome in self.run_iter(jobs):
            outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def close(self, key: Hashable) -> None:
        """Close the pooled connection of ``key``; commands still running on it fail with ChannelFailed."""
        self._call(lambda: self._drop(key))

    def close_idle(self, older_than: float) -> int:
        """Close connections unused for ``older_than`` seconds; how many."""
        return int(self._call(lambda: self._close_idle(older_than)))

    def close_all(self) -> None:
        self._call(self._drop_all)

    def on_drop(self, listener: Callable[[Hashable, ConnectSpec], None]) -> None:
        """Call ``listener(key, spec)`` (on the loop thread) whenever a connection leaves the pool.

        For a caller that keeps something per pooled connection (``fleet_engine``'s specs) and
        must let it go with the connection.
        """
        self._call(lambda: self._drop_listeners.append(listener))

    def pooled(self) -> int:
        """Connections in the pool (any state)."""
        return int(self._call(lambda: len(self._pool)))

    def _call(self, work: Callable[[], Any]) -> Any:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

        self._submit(run)
        return future.result()

    def _submit(self, work: Callable[[], None]) -> None:
        self._inbox.put(work)
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sshcontrol-cbatch", daemon=True)
                self._thread.start()
        os.eventfd_write(self._wake, 1)

    # -- the loop thread --

    def _loop(self) -> None:
        while True:
            try:
                self._turn()
            except Exception:  # never let the loop die: every job would wait for ever
                log.exception("batch engine loop")
                with contextlib.suppress(Exception):
                    self._drop_all()  # every job in it ends (with an error) rather than waits for ever
            finally:
                self._flush()

    def _flush(self) -> None:
        """Hand the messages of this turn over, one list per caller."""
        for outbox in self._dirty:
            outbox.flush()
        self._dirty.clear()

    def _turn(self) -> None:
        active = any(c.runs or c.state == "connecting" for c in self._pool.values()) or bool(self._to_connect)
        woken = self._selector.select(TICK if active else 1.0 if self._pool else None)
        ready: set[_Conn] = set()
        for key, _mask in woken:
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._wake)
            else:
                ready.add(key.data)
        while True:
            try:
                work = self._inbox.get_nowait()
            except queue.Empty:
                break
            work()
        now = time.monotonic()
        for conn in ready:
            if self._pool.get(conn.key) is conn:  # not dropped by the work above
                self._step_conn(conn, now)
        # The rest only once a TICK: a turn per wake-up that walked every pooled connection cost
        # O(pool) per event (200-1,000 connections, thousands of wake-ups a batch).
        if now >= self._next_sweep:
            self._next_sweep = now + TICK
            for conn in list(self._pool.values()):
                busy = conn.runs or conn.waiting or conn.state == "connecting"
                if busy and now - conn.last_step >= TICK and conn not in ready:
                    self._step_conn(conn, now)
        self._start_connects()
        if now >= self._housekeeping:  # keepalives and idle connections: once a second is enough
            self._housekeeping = now + 1.0
            self._keepalives(now)
            self._close_idle(self.idle_timeout)

    def _accept(self, outbox: _Outbox, runs: list[_Run]) -> None:
        outbox.dirty = self._dirty
        for run in runs:
            self._place(run)

    def _place(self, run: _Run) -> None:
        """Put a job on its key's connection (opening one if needed)."""
        job = run.job
        conn = self._pool.get(job.key)
        if conn is not None and (
            (conn.spec is not job.spec and conn.spec != job.spec) or conn.state in ("dead", "failed")
        ):
            self._drop(job.key)
            conn = None
        if conn is not None and conn.state == "ready" and not conn.runs and conn.peer_closed():
            self._drop(job.key)  # went away while idle: replace it
            conn = None
        if conn is None:
            conn = _Conn(job.key, job.spec, next(self._numbers))
            self._pool[job.key] = conn
            self._to_connect.append(conn)
        run.fresh = conn.state != "ready"
        conn.waiting.append(run)
        if conn.state == "ready":
            self._start_runs(conn)

    def _start_connects(self) -> None:
        while self._to_connect and len(self._connecting) < self.connects_at_once:
            conn = self._to_connect.popleft()
            if conn.state != "new" or self._pool.get(conn.key) is not conn:
                continue
            self.connections_opened += 1
            conn.state = "connecting"
            conn.connect_deadline = time.monotonic() + conn.spec.connect_timeout
            conn.connect_step = _connect(conn)
            self._connecting.add(conn)
            self.most_connecting = max(self.most_connecting, len(self._connecting))
            self._step_conn(conn, time.monotonic())

    def _start_runs(self, conn: _Conn) -> None:
        while conn.waiting and len(conn.runs) < self.channels:
            run = conn.waiting.popleft()
            run.conn = conn
            if conn.host_key is not None and run.job.on_connection is not None:
                run.outbox.put((run.index, "connection", (conn.host_key, run.fresh)))
            run.step = _execute(run, conn)
            conn.runs.add(run)
            self._step_run(conn, run)
        conn.last_used = time.monotonic()

    def _step_conn(self, conn: _Conn, now: float) -> None:
        conn.last_step = now
        if conn.state == "connecting":
            self._step_connect(conn, now)
        if conn.state == "ready":
            for _round in range(_ROUNDS):
                before = conn.progress
                for run in list(conn.runs):
                    self._step_run(conn, run)
                if conn.progress == before or conn.state != "ready":
                    break
        for run in list(conn.waiting):  # cancelled before it got a channel
            if run.job.cancel is not None and run.job.cancel.is_set():
                conn.waiting.remove(run)
                run.finish(_not_run(cancelled=True))
        self._register(conn)

    def _step_connect(self, conn: _Conn, now: float) -> None:
        assert conn.connect_step is not None
        error: SshError | None = None
        if now >= conn.connect_deadline:
            conn.connect_step.close()
            error = ConnectFailed(
                f"timed out after {conn.spec.connect_timeout:g} s connecting to {conn.where}"
            )
        else:
            try:
                conn.connect_waits = next(conn.connect_step)
                return
            except StopIteration:
                pass
            except SshError as exc:
                error = exc
            except (SSH2Error, OSError) as exc:
                error = ConnectFailed(f"SSH handshake with {conn.where} failed: {_describe(exc)}")
        self._connecting.discard(conn)
        conn.connect_step = None
        if error is None:
            conn.state = "ready"
            self._start_runs(conn)
            return
        conn.state = "failed"
        self._unregister(conn)
        conn.close()
        self._leave(conn)
        while conn.waiting:
            conn.waiting.popleft().finish(error)

    def _step_run(self, conn: _Conn, run: _Run) -> None:
        assert run.step is not None
        try:
            run.waits = next(run.step)
            return
        except StopIteration:
            pass
        except _Gone as exc:
            conn.runs.discard(run)
            self._conn_broke(conn)
            if not run.retried:
                run.retried = True
                self._place(run)
                return
            run.finish(ChannelFailed(str(exc)))
        except ConnectionLost as exc:
            conn.runs.discard(run)
            self._conn_broke(conn)
            run.finish(exc)
        except SshError as exc:
            run.finish(exc)
        except Exception as exc:
            log.exception("batch engine job")
            run.finish(_cut_off(run, f"the batch engine failed: {one_line(exc)}"))
        conn.runs.discard(run)
        conn.last_used = time.monotonic()
        if conn.state == "ready":
            self._start_runs(conn)

    def _conn_broke(self, conn: _Conn) -> None:
        """The connection failed under a job: out of the pool. Its jobs that had not started
        go to a new one (once); those that had are lost with it."""
        if conn.state != "ready":
            return
        self._unregister(conn)
        conn.close()
        self._leave(conn)
        lost = ConnectionLost("the SSH connection was lost while the command ran; it may have run in part")
        for run in list(conn.runs):
            if run.step is not None:
                run.step.close()
            if run.executing:
                run.finish(lost)
            else:
                conn.waiting.append(run)
        conn.runs.clear()
        waiting, conn.waiting = list(conn.waiting), deque()
        for run in waiting:
            if run.retried:
                run.finish(ChannelFailed("the SSH connection was lost before the command started"))
            else:
                run.retried = True
                self._place(run)

    def _register(self, conn: _Conn) -> None:
        if conn.sock is None or conn.state not in ("connecting", "ready"):
            self._unregister(conn)
            return
        if conn.state == "connecting":
            events = conn.connect_waits
        else:
            events = 0
            for run in conn.runs:
                events |= run.waits
        if conn.registered and conn.registered_sock is not conn.sock:
            self._unregister(conn)
        if events == conn.registered:
            return
        if not events:
            self._unregister(conn)
        elif conn.registered:
            self._selector.modify(conn.sock, events, conn)
        else:
            self._selector.register(conn.sock, events, conn)
            conn.registered_sock = conn.sock
        conn.registered = events

    def _unregister(self, conn: _Conn) -> None:
        if conn.registered and conn.registered_sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.registered_sock)
        conn.registered, conn.registered_sock = 0, None

    def _leave(self, conn: _Conn) -> None:
        """``conn`` out of the pool (if it is still the one of its key); the listeners told."""
        if self._pool.get(conn.key) is conn:
            del self._pool[conn.key]
            for listener in self._drop_listeners:
                try:
                    listener(conn.key, conn.spec)
                except Exception:
                    log.exception("batch engine drop listener")

    def _drop(self, key: Hashable) -> None:
        conn = self._pool.get(key)
        if conn is None:
            return
        self._leave(conn)
        self._connecting.discard(conn)
        if conn.connect_step is not None:
            conn.connect_step.close()
        self._unregister(conn)
        conn.close()
        for run in [*conn.runs, *conn.waiting]:
            if run.step is not None:
                run.step.close()
            run.finish(_cut_off(run, "the connection was closed"))
        conn.runs.clear()
        conn.waiting.clear()

    def _drop_all(self) -> None:
        for key in list(self._pool):
            self._drop(key)

    def _close_idle(self, older_than: float) -> int:
        cutoff = time.monotonic() - older_than
        idle = [
            key for key, c in self._pool.items() if not c.runs and not c.waiting and c.last_used <= cutoff
        ]
        for key in idle:
            self._drop(key)
        return len(idle)

    def _keepalives(self, now: float) -> None:
        for conn in list(self._pool.values()):
            if (
                conn.state != "ready"
                or conn.runs
                or conn.spec.keepalive_seconds <= 0
                or now < conn.next_keepalive
            ):
                continue
            try:
                wait = conn.session.keepalive_send()
            except (SSH2Error, OSError):
                self._conn_broke(conn)
                continue
            if conn.peer_closed():
                self._conn_broke(conn)
                continue
            conn.next_keepalive = now + max(1, wait if wait > 0 else conn.spec.keepalive_seconds)


_engine: BatchEngine | None = None
_engine_lock = threading.Lock()


def engine() -> BatchEngine:
    """The process's engine (its loop thread starts with the first job)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = BatchEngine()
        return _engine


def pooled_connections() -> int:
    """The connections this process's engine holds, without starting one (0 if it never ran)."""
    with _engine_lock:
        running = _engine
    return running.pooled() if running is not None else 0
