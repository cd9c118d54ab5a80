"""Running one command on its own channel of an open connection.

Each command gets a fresh session channel, so many commands run in parallel on one
transport. The remote side first prints the shell's PID: OpenSSH starts non-pty sessions
with ``setsid()``, so that PID is also the process group of everything the command starts,
and killing the group (from a second channel) is how a timeout or cancellation really stops
the command — closing the channel alone leaves it running.

Exit signals: paramiko ignores the SSH ``exit-signal`` request and only reports exit status
-1. We add a handler for it on each transport we run commands on, so a command whose shell
died from a signal reports ``exit_status=None`` and ``signal="KILL"`` (or whichever).
"""

from __future__ import annotations

import math
import re
import select
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from sshlib.errors import ChannelFailed, ConnectionLost


@dataclass(frozen=True)
class ExecRequest:
    command: str
    working_directory: str | None = None
    timeout: float = 60.0
    stdin: bytes | None = None
    max_output_bytes: int = 1 << 20
    # Run under ``sudo -S``; the caller puts the password line first on ``stdin``.
    sudo: bool = False


@dataclass
class ExecResult:
    exit_status: int | None  # None when the process was killed (timeout / cancel)
    signal: str | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    cancelled: bool
    duration_ms: float


ProgressFn = Callable[[int, int], None]  # (stdout_bytes so far, stderr_bytes so far)
ProgressCallback = ProgressFn

PROGRESS_INTERVAL = 0.5
_READ_SIZE = 1 << 20
_CANCEL_POLL = 0.05
_OPEN_TIMEOUT = 30.0
# Above this, stdin is fed from a helper thread: a blocking sendall past the channel window
# while nobody drains the command's output would deadlock both sides.
_INLINE_STDIN_LIMIT = 1 << 20
# How long the remote killer waits for SIGTERM to work before sending SIGKILL.
_TERM_GRACE_STEPS = 10  # x 0.1 s
_KILL_WAIT = 5.0
_PGID_MARKER = b"__sshcontrol_pgid="
_PGID_LINE = re.compile(rb"__sshcontrol_pgid=(\d+)\n")
_PGID_SEARCH_LIMIT = 1 << 16


def remote_command(request: ExecRequest) -> str:
    """The string the login shell runs: report the process group, cd, then run the command.

    Everything user-supplied is single-quoted, so a directory named ``/tmp; id`` is only a
    strange directory name.
    """
    parts = [f"printf '{_PGID_MARKER.decode()}%s\\n' \"$$\""]
    if request.working_directory:
        parts.append(f"cd -- {shlex.quote(request.working_directory)} || exit 126")
    if request.sudo:
        parts.append(sudo_command(request.command, request.timeout))
    else:
        parts.append(f"eval {shlex.quote(request.command)}")
    return "; ".join(parts)


# Where sudo is looked for: directories only root can write, never the account's own PATH.
SUDO_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What root's shell runs ($0 is the command): under `timeout` (its own process group, which it
# signals whole when sudo relays our TERM) if there is one; KILL 5 s after TERM.
_ROOT_SIDE_LIMIT = (
    'command -v timeout >/dev/null 2>&1 && exec timeout -k 5 {seconds} /bin/sh -c "$0"; exec /bin/sh -c "$0"'
)
# Root's own deadline comes this long after ours, so our kill (with its exit signal) comes first.
_ROOT_SIDE_GRACE = 5


def sudo_command(command: str, timeout: float) -> str:
    """How the account's shell starts sudo: as directly as a shell allows.

    -S reads the password from stdin (never argv, which `ps` shows); -p '' prints no prompt
    into the output; -k ignores a cached sudo timestamp, so sudo always reads the password
    line instead of leaving it on the command's stdin.

    ``exec`` (a builtin: it never looks up functions, not even one named ``/usr/bin/env``)
    replaces the shell with ``/usr/bin/env -i``, which clears the environment (``BASH_ENV``,
    ``LD_PRELOAD``, ``PATH`` shims) and finds ``sudo`` on a fixed, root-owned search path.
    This defeats a ``sudo`` function, a ``PATH`` shim and a function named after sudo's
    path, but not code that replaces ``exec`` itself or reads stdin in ``~/.bashrc``:
    whoever can write the account's start-up files owns its shells. The real protection is
    the rule in ``hosts.sudo_rule`` (no client lacking sudo may act as that account).

    Nothing the login shell parses is bash- or even POSIX-specific (no ``${...}``), so a csh
    login shell runs it too. The command gets sudo's own environment (its env_reset, and the
    system locale where sudo's PAM stack reads it, as Debian's and Ubuntu's do).

    As root, the command runs under ``timeout`` where the host has it: the process group
    kill that ends a timed-out or cancelled command cannot reach root's processes, but it
    reaches sudo, which relays the signal to ``timeout``, which signals its whole group; and
    ``timeout`` itself ends the command shortly after the deadline should that be lost too.
    The command text travels as ``$0`` of the root shell, so it is quoted once, as ever.
    """
    as_root = _ROOT_SIDE_LIMIT.format(seconds=math.ceil(max(timeout, 0.0)) + _ROOT_SIDE_GRACE)
    return (
        f"exec /usr/bin/env -i PATH={SUDO_SEARCH_PATH} sudo -S -k -p '' -- "
        f"/bin/sh -c {shlex.quote(as_root)} {shlex.quote(command)}"
    )


class _Capture:
    """Keeps the first and last halves of at most ``limit`` bytes of a stream, counts all of it."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(0, limit) // 2
        self.tail_limit = max(0, limit) - self.head_limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data or self.tail_limit <= 0:
            return
        self.tail.append(data)
        self.tail_len += len(data)
        # Drop whole chunks that are no longer needed; the last partial one is cut in text().
        while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_limit:
            self.tail_len -= len(self.tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > self.head_limit + self.tail_limit

    def text(self) -> str:
        tail = b"".join(self.tail)
        if len(tail) > self.tail_limit:
            tail = tail[len(tail) - self.tail_limit :]
        head = self.head.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail.decode("utf-8", errors="replace") if tail else head
        dropped = self.total - len(self.head) - len(tail)
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail.decode('utf-8', errors='replace')}"


class _Stdout:
    """stdout with the leading process-group line taken out before it is counted."""

    def __init__(self, limit: int) -> None:
        self.capture = _Capture(limit)
        self.pending: bytearray | None = bytearray()
        self.pgid: int | None = None

    def add(self, data: bytes) -> None:
        if self.pending is None:
            self.capture.add(data)
            return
        self.pending += data
        match = _PGID_LINE.search(self.pending)
        if match is not None:
            self.pgid = int(match.group(1))
            # Anything before the marker was printed by the user's shell start-up files.
            rest = bytes(self.pending[: match.start()] + self.pending[match.end() :])
        elif len(self.pending) > _PGID_SEARCH_LIMIT:
            rest = bytes(self.pending)  # not a shell that runs our prefix: give up, keep everything
        else:
            return
        self.pending = None
        if rest:
            self.capture.add(rest)

    def finish(self) -> None:
        if self.pending:
            data, self.pending = bytes(self.pending), None
            self.capture.add(data)
        self.pending = None


# -- exit-signal support ---------------------------------------------------------------------


def _exit_signal_aware_request_handler(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def handle(channel: paramiko.Channel, message: paramiko.Message) -> None:
        position = message.packet.tell()
        if message.get_text() == "exit-signal":
            message.get_boolean()  # want_reply: never set for exit-signal
            channel.__dict__["sshcontrol_exit_signal"] = message.get_text()
            return
        message.packet.seek(position)
        original(channel, message)

    return handle


def _install_exit_signal_handler(transport: paramiko.Transport) -> None:
    """Teach this transport to record ``exit-signal`` (paramiko drops it) on the channel."""
    if transport.__dict__.get("sshcontrol_exit_signal_handler"):
        return
    table = getattr(type(transport), "_channel_handler_table", None)
    if not isinstance(table, dict) or MSG_CHANNEL_REQUEST not in table:
        return  # a paramiko without this private table: we only lose the signal name
    patched = dict(table)
    patched[MSG_CHANNEL_REQUEST] = _exit_signal_aware_request_handler(table[MSG_CHANNEL_REQUEST])
    transport.__dict__["_channel_handler_table"] = patched
    transport.__dict__["sshcontrol_exit_signal_handler"] = True


def _exit_signal(channel: paramiko.Channel) -> str | None:
    value = channel.__dict__.get("sshcontrol_exit_signal")
    return value if isinstance(value, str) else None


# -- running -----------------------------------------------------------------------------------


def _open_channel(transport: paramiko.Transport, command: str) -> paramiko.Channel:
    try:
        channel = transport.open_session(timeout=_OPEN_TIMEOUT)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ChannelFailed(f"could not open a channel: {_one_line(exc)}") from None
    try:
        channel.exec_command(command)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        channel.close()
        raise ChannelFailed(f"the server refused to run the command: {_one_line(exc)}") from None
    return channel


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _feed_stdin(channel: paramiko.Channel, data: bytes) -> None:
    try:
        if data:
            channel.sendall(data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command exited without reading all of its input: not an error


def _kill_process_group(transport: paramiko.Transport, pgid: int) -> str | None:
    """Stop a process group from a second channel: TERM, then KILL if it is still there.

    Returns the signal that ended it, or None if the group was already gone.
    """
    script = (
        f"p={pgid}; kill -TERM -- -$p 2>/dev/null || exit 0; i=0; "
        f"while [ $i -lt {_TERM_GRACE_STEPS} ]; do "
        "kill -0 -- -$p 2>/dev/null || { echo TERM; exit 0; }; sleep 0.1; i=$((i+1)); done; "
        "kill -KILL -- -$p 2>/dev/null; echo KILL"
    )
    try:
        channel = _open_channel(transport, script)
    except ChannelFailed:
        return None
    try:
        channel.shutdown_write()
        channel.settimeout(_KILL_WAIT)
        output = bytearray()
        while chunk := channel.recv(1024):
            output += chunk
        word = output.decode("ascii", errors="replace").strip()
        return word if word in ("TERM", "KILL") else None
    except (TimeoutError, OSError, EOFError, paramiko.SSHException):
        return None
    finally:
        channel.close()


def kill_process_group(client: paramiko.SSHClient, pgid: int) -> str | None:
    """Stop a remote process group over a new channel of ``client`` (TERM, then KILL); the signal used.

    For a command whose own channel is gone: one started by a process that died.
    """
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise ChannelFailed("the SSH connection is closed")
    return _kill_process_group(transport, pgid)


def run_command(
    client: paramiko.SSHClient,
    request: ExecRequest,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    on_started: Callable[[int], None] | None = None,
) -> ExecResult:
    """Run ``request.command`` on a new channel of ``client``'s transport.

    Output is streamed and capped at ``max_output_bytes`` per stream (head and tail kept).
    On timeout or ``cancel``, the remote process group is killed and the result has
    ``exit_status=None``. Raises ChannelFailed if no channel can be opened or the
    connection is gone. Raises ConnectionLost if it drops while the command runs.
    ``on_started`` gets the remote process group as soon as the shell reports it.
    """
    started = time.perf_counter()
    deadline = started + max(0.0, request.timeout)
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise ChannelFailed("the SSH connection is closed")
    _install_exit_signal_handler(transport)
    channel = _open_channel(transport, remote_command(request))
    stdout = _Stdout(request.max_output_bytes)
    stderr = _Capture(request.max_output_bytes)
    timed_out = cancelled = False
    killed_with: str | None = None
    feeder: threading.Thread | None = None
    try:
        if request.stdin is None:
            channel.shutdown_write()
        elif len(request.stdin) <= _INLINE_STDIN_LIMIT:
            _feed_stdin(channel, request.stdin)
        else:
            feeder = threading.Thread(
                target=_feed_stdin, args=(channel, request.stdin), name="sshcontrol-stdin", daemon=True
            )
            feeder.start()

        fd = channel.fileno()
        last_progress = started
        reported = (0, 0)
        while True:
            got = False
            if channel.recv_ready():
                stdout.add(channel.recv(_READ_SIZE))
                got = True
                if on_started is not None and stdout.pgid is not None:
                    on_started(stdout.pgid)
                    on_started = None
            if channel.recv_stderr_ready():
                stderr.add(channel.recv_stderr(_READ_SIZE))
                got = True
            now = time.perf_counter()
            if on_progress is not None and got and now - last_progress >= PROGRESS_INTERVAL:
                counts = (stdout.capture.total, stderr.total)
                if counts != reported:
                    on_progress(*counts)
                    reported, last_progress = counts, now
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            if now >= deadline:
                timed_out = True
                break
            if got:
                continue
            if channel.eof_received or channel.closed:
                if channel.exit_status_ready():
                    break
                # Output is complete; the exit status follows in the next packet.
                wait = min(deadline - now, _CANCEL_POLL if cancel is not None else deadline - now)
                channel.status_event.wait(wait)
                continue
            wait = deadline - now
            if cancel is not None:
                wait = min(wait, _CANCEL_POLL)
            select.select([fd], [], [], wait)

        if timed_out or cancelled:
            stdout.finish()
            if stdout.pgid is not None:
                killed_with = _kill_process_group(transport, stdout.pgid)
                # Let the dying command's last output and exit-signal arrive before closing.
                _drain_until_closed(channel, stdout, stderr, time.perf_counter() + 1.0)
            exit_status = None
            signal = _exit_signal(channel) or killed_with
        else:
            stdout.finish()
            signal = _exit_signal(channel)
            exit_status = channel.exit_status if channel.exit_status >= 0 and signal is None else None
            if exit_status is None and signal is None and not transport.is_active():
                raise ConnectionLost(
                    "the SSH connection was lost while the command ran; it may have run in part"
                )
    except BaseException:
        # A failing progress callback or an interrupt must not leave the command running.
        if killed_with is None and stdout.pgid is not None and transport.is_active() and not channel.closed:
            _kill_process_group(transport, stdout.pgid)
        raise
    finally:
        channel.close()
        if feeder is not None:
            feeder.join(timeout=1.0)

    return ExecResult(
        exit_status=exit_status,
        signal=signal,
        stdout=stdout.capture.text(),
        stderr=stderr.text(),
        stdout_bytes=stdout.capture.total,
        stderr_bytes=stderr.total,
        stdout_truncated=stdout.capture.truncated,
        stderr_truncated=stderr.truncated,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )


def _drain_until_closed(channel: paramiko.Channel, stdout: _Stdout, stderr: _Capture, until: float) -> None:
    fd = channel.fileno()
    while (now := time.perf_counter()) < until:
        got = False
        if channel.recv_ready():
            stdout.add(channel.recv(_READ_SIZE))
            got = True
        if channel.recv_stderr_ready():
            stderr.add(channel.recv_stderr(_READ_SIZE))
            got = True
        if got:
            continue
        if channel.closed or (channel.eof_received and channel.exit_status_ready()):
            return
        if channel.eof_received:
            channel.status_event.wait(until - now)
        else:
            select.select([fd], [], [], until - now)
