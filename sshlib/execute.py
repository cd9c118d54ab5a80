"""Running one command on its own channel of an open connection.

Each command gets a fresh session channel, so many commands run in parallel on one
transport. The remote side first prints the shell's PID: OpenSSH starts non-pty sessions
with ``setsid()``, so that PID is also the process group of everything the command starts,
and killing the group (from a second channel) is how a timeout or cancellation really stops
the command — closing the channel alone leaves it running.

Output capture lives in ``sshlib.capture``; the exit-signal support (paramiko drops the
request) in ``sshlib.exit_signal``. Here: the wire command, the read loop and the kill.
"""

from __future__ import annotations

import enum
import math
import select
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from sshlib.capture import PGID_MARKER, Capture, OutputSink, StdoutCapture
from sshlib.errors import ChannelFailed, ConnectionLost, one_line
from sshlib.exit_signal import exit_signal, install_exit_signal_handler


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
    # Lines of each stream, all of it (not only what was kept): a last line without newline counts.
    stdout_lines: int = 0
    stderr_lines: int = 0

    @classmethod
    def captured(
        cls,
        stdout: Capture,
        stderr: Capture,
        *,
        exit_status: int | None,
        signal: str | None,
        timed_out: bool,
        cancelled: bool,
        duration_ms: float,
    ) -> ExecResult:
        """The result of a command whose output ``stdout`` and ``stderr`` captured (both engines')."""
        return cls(
            exit_status=exit_status,
            signal=signal,
            stdout=stdout.text(),
            stderr=stderr.text(),
            stdout_bytes=stdout.total,
            stderr_bytes=stderr.total,
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            timed_out=timed_out,
            cancelled=cancelled,
            duration_ms=duration_ms,
            stdout_lines=stdout.lines,
            stderr_lines=stderr.lines,
        )


# Told (stdout bytes so far, stderr bytes so far) while a command runs. The one progress
# callback type of the SSH runtime; the layers above import it from here.
ProgressFn = Callable[[int, int], None]

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


def remote_command(request: ExecRequest) -> str:
    """The string the login shell runs: report the process group, cd, then run the command.

    Everything user-supplied is single-quoted, so a directory named ``/tmp; id`` is only a
    strange directory name.
    """
    parts = [f"printf '{PGID_MARKER.decode()}%s\\n' \"$$\""]
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


# -- running -----------------------------------------------------------------------------------


def _open_channel(transport: paramiko.Transport, command: str) -> paramiko.Channel:
    try:
        channel = transport.open_session(timeout=_OPEN_TIMEOUT)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ChannelFailed(f"could not open a channel: {one_line(exc)}") from None
    try:
        channel.exec_command(command)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        channel.close()
        raise ChannelFailed(f"the server refused to run the command: {one_line(exc)}") from None
    return channel


def _feed_stdin(channel: paramiko.Channel, data: bytes) -> None:
    try:
        if data:
            channel.sendall(data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command exited without reading all of its input: not an error


def kill_script(pgid: int) -> str:
    """What a second channel runs to stop process group ``pgid``: TERM, then KILL if it is still there.

    It prints the signal that ended the group (``kill_word`` reads it), nothing if it was gone.
    """
    return (
        f"p={pgid}; kill -TERM -- -$p 2>/dev/null || exit 0; i=0; "
        f"while [ $i -lt {_TERM_GRACE_STEPS} ]; do "
        "kill -0 -- -$p 2>/dev/null || { echo TERM; exit 0; }; sleep 0.1; i=$((i+1)); done; "
        "kill -KILL -- -$p 2>/dev/null; echo KILL"
    )


def kill_word(output: bytes) -> str | None:
    """The signal ``kill_script`` reports having used, or None."""
    word = output.decode("ascii", errors="replace").strip()
    return word if word in ("TERM", "KILL") else None


def _kill_process_group(transport: paramiko.Transport, pgid: int) -> str | None:
    """Stop a process group from a second channel: TERM, then KILL if it is still there.

    Returns the signal that ended it, or None if the group was already gone.
    """
    try:
        channel = _open_channel(transport, kill_script(pgid))
    except ChannelFailed:
        return None
    try:
        channel.shutdown_write()
        channel.settimeout(_KILL_WAIT)
        output = bytearray()
        while chunk := channel.recv(1024):
            output += chunk
        return kill_word(bytes(output))
    except (TimeoutError, OSError, EOFError, paramiko.SSHException):
        return None
    finally:
        channel.close()


def _active_transport(client: paramiko.SSHClient) -> paramiko.Transport:
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise ChannelFailed("the SSH connection is closed")
    return transport


def kill_process_group(client: paramiko.SSHClient, pgid: int) -> str | None:
    """Stop a remote process group over a new channel of ``client`` (TERM, then KILL); the signal used.

    For a command whose own channel is gone: one started by a process that died.
    """
    return _kill_process_group(_active_transport(client), pgid)


class _Stop(enum.Enum):
    """Why the read loop ended."""

    EXITED = "exited"
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"


@dataclass
class _Output:
    """Both streams of one command, and the callbacks told about them as they grow."""

    stdout: StdoutCapture
    stderr: Capture
    on_progress: ProgressFn | None
    on_started: Callable[[int], None] | None
    last_progress: float
    reported: tuple[int, int] = (0, 0)

    def pump(self, channel: paramiko.Channel) -> bool:
        """The one read step: take whatever output is ready; True if there was any."""
        got = False
        if channel.recv_ready():
            self.stdout.add(channel.recv(_READ_SIZE))
            got = True
        if channel.recv_stderr_ready():
            self.stderr.add(channel.recv_stderr(_READ_SIZE))
            got = True
        return got

    def tell(self, now: float) -> None:
        """After new output: report the process group once, and progress at most every interval."""
        if self.on_started is not None and self.stdout.pgid is not None:
            self.on_started(self.stdout.pgid)
            self.on_started = None
        if self.on_progress is not None and now - self.last_progress >= PROGRESS_INTERVAL:
            counts = (self.stdout.capture.total, self.stderr.total)
            if counts != self.reported:
                self.on_progress(*counts)
                self.reported, self.last_progress = counts, now


def _wait_for_more(channel: paramiko.Channel, fd: int, seconds: float) -> None:
    if channel.eof_received or channel.closed:
        # Output is complete; the exit status follows in the next packet.
        channel.status_event.wait(seconds)
    else:
        # poll, not select: select() refuses descriptors above 1023, and a process holding
        # thousands of sessions hands out such descriptors to its channels' pipes.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(max(0.0, seconds) * 1000)


def _read_until_stopped(
    channel: paramiko.Channel, output: _Output, deadline: float, cancel: threading.Event | None
) -> _Stop:
    fd = channel.fileno()
    while True:
        got = output.pump(channel)
        now = time.perf_counter()
        if got:
            output.tell(now)
        if cancel is not None and cancel.is_set():
            return _Stop.CANCELLED
        if now >= deadline:
            return _Stop.TIMED_OUT
        if got:
            continue
        if (channel.eof_received or channel.closed) and channel.exit_status_ready():
            return _Stop.EXITED
        _wait_for_more(channel, fd, deadline - now if cancel is None else min(deadline - now, _CANCEL_POLL))


def _drain_until_closed(channel: paramiko.Channel, output: _Output, until: float) -> None:
    fd = channel.fileno()
    while (now := time.perf_counter()) < until:
        if output.pump(channel):
            continue
        if channel.closed or (channel.eof_received and channel.exit_status_ready()):
            return
        _wait_for_more(channel, fd, until - now)


def _start_stdin(channel: paramiko.Channel, stdin: bytes | None) -> threading.Thread | None:
    """Send the command's input (or its end); a helper thread when it is large. The thread, if any."""
    if stdin is None:
        channel.shutdown_write()
        return None
    if len(stdin) <= _INLINE_STDIN_LIMIT:
        _feed_stdin(channel, stdin)
        return None
    feeder = threading.Thread(target=_feed_stdin, args=(channel, stdin), name="sshcontrol-stdin", daemon=True)
    feeder.start()
    return feeder


def _exit_status(channel: paramiko.Channel, transport: paramiko.Transport) -> tuple[int | None, str | None]:
    """How a command that ended by itself ended: (exit status, signal); exactly one is set."""
    signal = exit_signal(channel)
    exit_status = channel.exit_status if channel.exit_status >= 0 and signal is None else None
    if exit_status is None and signal is None and not transport.is_active():
        raise ConnectionLost("the SSH connection was lost while the command ran; it may have run in part")
    return exit_status, signal


def run_command(
    client: paramiko.SSHClient,
    request: ExecRequest,
    cancel: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    on_started: Callable[[int], None] | None = None,
    sink: OutputSink | None = None,
) -> ExecResult:
    """Run ``request.command`` on a new channel of ``client``'s transport.

    Output is streamed and capped at ``max_output_bytes`` per stream (head and tail kept).
    On timeout or ``cancel``, the remote process group is killed and the result has
    ``exit_status=None``. Raises ChannelFailed if no channel can be opened or the
    connection is gone. Raises ConnectionLost if it drops while the command runs.
    ``on_started`` gets the remote process group as soon as the shell reports it.
    ``sink``, if given, is told every byte of both streams as it arrives (uncapped).
    """
    started = time.perf_counter()
    transport = _active_transport(client)
    install_exit_signal_handler(transport)
    channel = _open_channel(transport, remote_command(request))
    output = _Output(
        StdoutCapture(request.max_output_bytes, sink),
        Capture(request.max_output_bytes, sink, "stderr"),
        on_progress,
        on_started,
        last_progress=started,
    )
    killed_with: str | None = None
    feeder: threading.Thread | None = None
    try:
        feeder = _start_stdin(channel, request.stdin)
        stop = _read_until_stopped(channel, output, started + max(0.0, request.timeout), cancel)
        output.stdout.finish()
        if stop is _Stop.EXITED:
            exit_status, signal = _exit_status(channel, transport)
        else:
            exit_status = None
            if output.stdout.pgid is not None:
                killed_with = _kill_process_group(transport, output.stdout.pgid)
                # Let the dying command's last output and exit-signal arrive before closing.
                _drain_until_closed(channel, output, time.perf_counter() + 1.0)
            signal = exit_signal(channel) or killed_with
    except BaseException:
        # A failing progress callback or an interrupt must not leave the command running.
        pgid = output.stdout.pgid
        if killed_with is None and pgid is not None and transport.is_active() and not channel.closed:
            _kill_process_group(transport, pgid)
        raise
    finally:
        channel.close()
        if feeder is not None:
            feeder.join(timeout=1.0)

    return ExecResult.captured(
        output.stdout.capture,
        output.stderr,
        exit_status=exit_status,
        signal=signal,
        timed_out=stop is _Stop.TIMED_OUT,
        cancelled=stop is _Stop.CANCELLED,
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )
