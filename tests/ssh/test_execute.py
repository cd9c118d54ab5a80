"""Running commands on channels of one shared connection to a real sshd."""

from __future__ import annotations

import itertools
import os
import resource
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from sshlib.connect import Connection, open_connection
from sshlib.errors import ChannelFailed, ConnectionLost
from sshlib.execute import ExecRequest, ExecResult, run_command
from tests.polling import wait_until
from tests.ssh.conftest import password_spec
from tests.sshd import SshServer


def run(connection: Connection, command: str, **fields: object) -> ExecResult:
    return run_command(connection.client, ExecRequest(command, **fields))  # type: ignore[arg-type]


def assert_gone(sshd: SshServer, pattern: str, within: float = 3.0) -> None:
    wait_until(lambda: not sshd.user_processes(pattern), within, f"a process matching {pattern!r} is left")


def test_it_returns_exit_status_and_separates_streams(connection: Connection) -> None:
    result = run(connection, "echo out; echo err >&2; exit 3")
    assert result.exit_status == 3
    assert result.signal is None
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert (result.stdout_bytes, result.stderr_bytes) == (4, 4)
    assert not (result.timed_out or result.cancelled or result.stdout_truncated or result.stderr_truncated)
    assert result.duration_ms > 0
    assert run(connection, "true").exit_status == 0
    assert run(connection, "true").stdout == ""


def test_it_feeds_stdin(connection: Connection) -> None:
    result = run(connection, "tr a-z A-Z", stdin=b"hello\n")
    assert result.stdout == "HELLO\n"
    big = b"x" * (3 << 20)  # past the channel window: fed from a thread while output drains
    result = run(connection, "cat", stdin=big, max_output_bytes=8 << 20)
    assert result.stdout_bytes == len(big)
    assert result.stdout == big.decode()


def test_cat_without_stdin_returns_at_once(connection: Connection) -> None:
    # stdin is closed, so cat ends by itself instead of waiting for the timeout.
    result = run(connection, "cat", timeout=30)
    assert result.exit_status == 0
    assert not result.timed_out


def test_a_timeout_kills_the_remote_process(sshd: SshServer, connection: Connection) -> None:
    marker = f"sleep 300{uuid.uuid4().int % 1000}"
    started = time.monotonic()
    result = run(connection, f"echo started; {marker}", timeout=1)
    assert time.monotonic() - started < 3.0
    assert result.timed_out
    assert result.exit_status is None
    assert result.signal in ("TERM", "KILL")
    assert result.stdout == "started\n"
    assert_gone(sshd, marker)


def test_a_process_ignoring_term_is_killed(sshd: SshServer, connection: Connection) -> None:
    marker = f"sleep 301{uuid.uuid4().int % 1000}"
    result = run(connection, f"trap '' TERM; {marker}; true", timeout=0.5)
    assert result.timed_out
    assert result.signal == "KILL"
    assert_gone(sshd, marker)


def test_cancelling_kills_the_remote_process(sshd: SshServer, connection: Connection) -> None:
    marker = f"sleep 302{uuid.uuid4().int % 1000}"
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    result = run_command(connection.client, ExecRequest(marker, timeout=60), cancel=cancel)
    assert time.monotonic() - started < 3.0
    assert result.cancelled and not result.timed_out
    assert result.exit_status is None
    assert_gone(sshd, marker)


def test_a_command_killed_by_a_signal_reports_it(connection: Connection) -> None:
    result = run(connection, "kill -KILL $$")
    assert result.exit_status is None
    assert result.signal == "KILL"


def test_huge_output_is_capped_with_head_and_tail(connection: Connection) -> None:
    total = 50 << 20
    started = time.monotonic()
    result = run_command(
        connection.client,
        ExecRequest(
            f"head -c {total} /dev/zero | tr '\\0' a; printf END; echo done >&2", max_output_bytes=1000
        ),
    )
    assert time.monotonic() - started < 15
    assert result.exit_status == 0
    assert result.stdout_bytes == total + 3
    assert result.stdout_truncated and not result.stderr_truncated
    assert (
        result.stdout == "a" * 500 + f"\n[... {total + 3 - 1000} bytes truncated ...]\n" + "a" * 497 + "END"
    )
    assert result.stderr == "done\n"


def test_progress_is_reported_while_output_streams(connection: Connection) -> None:
    progress: list[tuple[int, int]] = []
    result = run_command(
        connection.client,
        ExecRequest("for i in 1 2 3 4 5 6; do echo tick; echo tock >&2; sleep 0.25; done"),
        on_progress=lambda out, err: progress.append((out, err)),
    )
    assert result.stdout_bytes == 30
    assert 1 <= len(progress) <= 4  # at most every 0.5 s
    assert all(b[0] >= a[0] and b[1] >= a[1] and b != a for a, b in itertools.pairwise(progress))
    assert progress[-1][0] <= 30 and progress[-1][1] <= 30


def test_output_at_the_cap_is_not_truncated(connection: Connection) -> None:
    result = run(connection, "printf 0123456789", max_output_bytes=10)
    assert result.stdout == "0123456789" and not result.stdout_truncated
    result = run(connection, "printf 0123456789x", max_output_bytes=10)
    assert result.stdout == "01234\n[... 1 bytes truncated ...]\n6789x"


def test_binary_output_is_decoded_with_replacement(connection: Connection) -> None:
    result = run(connection, "head -c 1000 /dev/urandom")
    assert result.exit_status == 0
    assert result.stdout_bytes == 1000
    assert isinstance(result.stdout, str)


def test_working_directory_is_never_executed(connection: Connection) -> None:
    weird = f"/tmp/sshc-{uuid.uuid4().hex}/a b; id"
    assert run(connection, 'mkdir -p "$1"'.replace("$1", weird.replace('"', '\\"'))).exit_status == 0
    result = run(connection, "pwd", working_directory=weird)
    assert result.exit_status == 0
    assert result.stdout == weird + "\n"
    assert "uid=" not in result.stdout + result.stderr
    run(connection, f"rm -rf '{weird.rsplit('/', 1)[0]}'")


def test_a_missing_working_directory_fails_clearly(connection: Connection) -> None:
    result = run(connection, "echo should-not-run", working_directory="/nonexistent/dir")
    assert result.exit_status not in (0, None)
    assert "should-not-run" not in result.stdout
    assert "/nonexistent/dir" in result.stderr


def test_commands_run_in_parallel_on_one_connection(connection: Connection) -> None:
    """A barrier on the remote side: each command waits until all ten have started.

    Run one after another, the first would wait for the others until its timeout.
    """
    barrier = f"/tmp/sshc-barrier-{uuid.uuid4().hex}"
    wait_all = (
        f"mkdir -p {barrier}; touch {barrier}/$$; "
        f'while [ "$(ls {barrier} | wc -l)" -lt 10 ]; do sleep 0.02; done'
    )

    def one(i: int) -> ExecResult:
        return run(connection, f"{wait_all}; echo {i}", timeout=60)

    try:
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
    finally:
        run(connection, f"rm -rf {barrier}")
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
    assert not any(r.timed_out for r in results)


def test_small_writes_are_not_delayed_by_nagle(connection: Connection) -> None:
    """Each small request would otherwise wait for a delayed ACK (~40 ms per command)."""
    transport = connection.client.get_transport()
    assert transport is not None
    assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # type: ignore[union-attr]
    for _ in range(20):
        assert run(connection, "true").exit_status == 0


def test_a_closed_connection_raises_channel_failed(sshd: SshServer) -> None:
    conn = open_connection(password_spec(sshd))
    conn.close()
    with pytest.raises(ChannelFailed):
        run(conn, "true")


def test_a_failing_progress_callback_still_stops_the_command(sshd: SshServer, connection: Connection) -> None:
    marker = f"sleep 303{uuid.uuid4().int % 1000}"

    def explode(out: int, err: int) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run_command(
            connection.client,
            ExecRequest(f"while :; do echo tick; sleep 0.2; done & {marker}", timeout=30),
            on_progress=explode,
        )
    assert_gone(sshd, marker)


def test_a_dropped_connection_raises_connection_lost(sshd: SshServer) -> None:
    conn = open_connection(password_spec(sshd))
    marker = f"sleep 304{uuid.uuid4().int % 1000}"
    threading.Timer(0.5, conn.close).start()
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="connection was lost"):
        run(conn, marker, timeout=30)
    assert time.monotonic() - started < 3.0
    for pid in sshd.user_processes(marker):  # nobody could kill it: the connection was gone
        os.kill(int(pid), signal.SIGKILL)


def test_it_runs_commands_when_descriptors_are_above_1023(connection: Connection) -> None:
    # A process holding thousands of sessions: its channels' pipes get descriptors select() refuses.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        result = run(connection, "sleep 0.2; echo high")
        assert result.stdout == "high\n" and result.exit_status == 0
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
