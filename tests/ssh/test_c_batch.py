"""The libssh2 batch engine (sshlib/c_batch.py) against the suite's real sshd."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator

import paramiko
import pytest

from sshlib.c_batch import BatchEngine, Job, Outcome
from sshlib.connect import Connection, ConnectSpec, seen_key
from sshlib.errors import AuthenticationFailed, ConnectFailed, ConnectionLost, HostKeyChanged, HostKeyUnknown
from sshlib.execute import ExecRequest, ExecResult, run_command
from tests.polling import wait_until
from tests.ssh.conftest import password_spec
from tests.ssh.test_impostor import SECRET, Impostor, new_ed25519_key, pinned
from tests.ssh.test_impostor import spec as impostor_spec
from tests.sshd import SshServer, free_port


@pytest.fixture
def engine() -> Iterator[BatchEngine]:
    made = BatchEngine(connects_at_once=8)
    yield made
    made.close_all()


def key_spec(sshd: SshServer, kind: str = "ed25519", **overrides: object) -> ConnectSpec:
    return password_spec(sshd, password=None, private_key=sshd.private_key_text(kind), **overrides)


def result(outcome: Outcome) -> ExecResult:
    assert isinstance(outcome, ExecResult), outcome
    return outcome


def run_one(
    engine: BatchEngine, spec: ConnectSpec, command: str, key: object = "k", **fields: object
) -> Outcome:
    request = ExecRequest(command, **fields)  # type: ignore[arg-type]
    return engine.run_many([Job(key, spec, request)])[0]


def assert_gone(sshd: SshServer, pattern: str) -> None:
    wait_until(lambda: not sshd.user_processes(pattern), 5.0, f"a process matching {pattern!r} is left")


def test_many_jobs_at_once_get_their_own_output_and_status(sshd: SshServer, engine: BatchEngine) -> None:
    jobs = [
        Job(f"host{n % 5}", password_spec(sshd), ExecRequest(f"echo out{n}; echo err{n} >&2; exit {n % 7}"))
        for n in range(20)
    ]
    outcomes = engine.run_many(jobs)
    for n, outcome in enumerate(outcomes):
        got = result(outcome)
        assert (got.stdout, got.stderr, got.exit_status) == (f"out{n}\n", f"err{n}\n", n % 7)
        assert got.signal is None
        assert not (got.timed_out or got.cancelled)
    assert engine.connections_opened == 5  # one per key, shared by that key's jobs


def test_output_caps_and_counts_match_the_paramiko_path(
    sshd: SshServer, engine: BatchEngine, connection: Connection
) -> None:
    commands = [
        "seq 1 20000; printf tail",
        "head -c 300000 /dev/zero | tr '\\0' x; seq 1 10 >&2",
        "printf 'a\\nb'; printf 'no newline' >&2; exit 4",
        "true",
    ]
    for command in commands:
        request = ExecRequest(command, max_output_bytes=4096)
        ours = result(engine.run_many([Job("k", password_spec(sshd), request)])[0])
        theirs = run_command(connection.client, request)
        for name in (
            "exit_status",
            "signal",
            "stdout",
            "stderr",
            "stdout_bytes",
            "stderr_bytes",
            "stdout_truncated",
            "stderr_truncated",
            "stdout_lines",
            "stderr_lines",
            "timed_out",
            "cancelled",
        ):
            assert getattr(ours, name) == getattr(theirs, name), (command, name)


def test_the_working_directory_and_stdin_travel_as_on_the_paramiko_path(
    sshd: SshServer, engine: BatchEngine
) -> None:
    got = result(
        run_one(engine, password_spec(sshd), "pwd; tr a-z A-Z", working_directory="/tmp", stdin=b"hi\n")
    )
    assert got.stdout == "/tmp\nHI\n"
    big = b"y" * (1 << 20)
    got = result(run_one(engine, password_spec(sshd), "wc -c", stdin=big))
    assert got.stdout.strip() == str(len(big))
    missing = result(run_one(engine, password_spec(sshd), "pwd", working_directory="/no/such/dir"))
    assert missing.exit_status == 126


def test_sudo_gets_its_password_line_on_stdin_like_the_paramiko_path(
    sshd: SshServer, engine: BatchEngine, connection: Connection
) -> None:
    # The test user may not sudo: both paths see sudo read the line and refuse the same way.
    request = ExecRequest("id -u", sudo=True, stdin=f"{sshd.password}\n".encode(), timeout=20)
    ours = result(engine.run_many([Job("k", password_spec(sshd), request)])[0])
    theirs = run_command(connection.client, request)
    assert (ours.exit_status, ours.stdout, ours.stderr) == (theirs.exit_status, theirs.stdout, theirs.stderr)
    assert ours.exit_status != 0


def test_sudo_runs_as_root_with_the_password_line_on_stdin(
    sshd: SshServer, engine: BatchEngine, sudoers: None
) -> None:
    line = f"{sshd.password}\n".encode()
    got = result(
        run_one(engine, password_spec(sshd), "id -u; cat", sudo=True, stdin=line + b"rest\n", timeout=20)
    )
    assert (got.exit_status, got.stdout) == (0, "0\nrest\n")  # the password line is sudo's alone
    wrong = result(run_one(engine, password_spec(sshd), "id -u", sudo=True, stdin=b"nope\n", timeout=20))
    assert wrong.exit_status != 0 and wrong.stdout == ""


def test_on_started_gets_the_process_group_on_the_caller_s_thread(
    sshd: SshServer, engine: BatchEngine
) -> None:
    seen: list[tuple[int, str]] = []

    def started(pgid: int) -> None:
        seen.append((pgid, threading.current_thread().name))

    request = ExecRequest('echo "$$"')
    job = Job("k", password_spec(sshd), request, on_started=started)
    got = result(engine.run_many([job])[0])
    assert seen == [(int(got.stdout), threading.current_thread().name)]


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_it_logs_in_with_each_key_type(sshd: SshServer, engine: BatchEngine, kind: str) -> None:
    assert result(run_one(engine, key_spec(sshd, kind), "echo ok")).stdout == "ok\n"


def test_it_logs_in_with_an_encrypted_key_and_its_passphrase(sshd: SshServer, engine: BatchEngine) -> None:
    assert sshd.encrypted_key is not None
    spec = password_spec(
        sshd,
        password=None,
        private_key=sshd.encrypted_key.read_text(),
        passphrase=sshd.encrypted_key_passphrase,
    )
    assert result(run_one(engine, spec, "echo ok")).stdout == "ok\n"
    wrong = password_spec(
        sshd, password=None, private_key=sshd.encrypted_key.read_text(), passphrase="not-the-phrase-77"
    )
    outcome = run_one(engine, wrong, "echo ok", key="wrong")
    assert isinstance(outcome, AuthenticationFailed)
    assert "not-the-phrase-77" not in str(outcome)


def test_a_wrong_password_fails_without_revealing_it(sshd: SshServer, engine: BatchEngine) -> None:
    outcome = run_one(engine, password_spec(sshd, password="wrong password 123"), "echo no")
    assert isinstance(outcome, AuthenticationFailed)
    assert str(outcome) == f"authentication failed for user {sshd.user}"
    assert "wrong password 123" not in str(outcome) and "wrong password 123" not in repr(outcome)


def sshd_log(sshd: SshServer) -> str:
    return (sshd.root / "sshd.log").read_text()


def test_a_wrong_host_key_is_refused_before_any_authentication(sshd: SshServer, engine: BatchEngine) -> None:
    impostor = paramiko.Ed25519Key.from_private_key_file(str(sshd.client_keys["ed25519"]))
    spec = password_spec(sshd, trusted_keys=(("ssh-ed25519", impostor.get_base64()),), host_ref="host-7")
    before = len(sshd_log(sshd))
    outcome = run_one(engine, spec, "echo no")
    assert isinstance(outcome, HostKeyChanged)
    server_key = seen_key(sshd.host_key("ed25519"))
    assert outcome.seen == server_key
    assert outcome.host_ref == "host-7"
    assert str(outcome) == f"host key changed: server presented ssh-ed25519 {server_key.fingerprint}"
    # The server saw the connection close before any user authentication request.
    wait_until(
        lambda: "closed by" in sshd_log(sshd)[before:] or "Connection reset" in sshd_log(sshd)[before:]
    )
    logged = sshd_log(sshd)[before:]
    assert "Failed password" not in logged and "Accepted" not in logged and "invalid user" not in logged


def test_an_untrusted_host_is_refused_even_with_trust_on_first_use(
    sshd: SshServer, engine: BatchEngine
) -> None:
    outcome = run_one(engine, password_spec(sshd, trusted_keys=(), trust_on_first_use=True), "echo no")
    assert isinstance(outcome, HostKeyUnknown)
    assert outcome.seen in [seen_key(key) for key in sshd.host_public_keys()]


def test_only_the_trusted_key_types_are_negotiated(sshd: SshServer, engine: BatchEngine) -> None:
    rsa = sshd.host_key("rsa")
    spec = password_spec(sshd, trusted_keys=(("ssh-rsa", rsa.get_base64()),))
    assert result(run_one(engine, spec, "echo ok")).stdout == "ok\n"
    unrelated = paramiko.ECDSAKey.generate(bits=384)  # the server has no nistp384 key
    spec = password_spec(sshd, trusted_keys=((unrelated.get_name(), unrelated.get_base64()),))
    outcome = run_one(engine, spec, "echo no", key="other")
    assert isinstance(outcome, HostKeyChanged), outcome
    assert "none of the trusted key types" in str(outcome)


def test_a_timeout_kills_the_remote_process_group(sshd: SshServer, engine: BatchEngine) -> None:
    marker = f"sleep 310{uuid.uuid4().int % 1000}"
    got = result(run_one(engine, password_spec(sshd), f"echo started; {marker}", timeout=1))
    assert got.timed_out and not got.cancelled
    assert got.exit_status is None
    assert got.signal in ("TERM", "KILL")
    assert got.stdout == "started\n"
    assert_gone(sshd, marker)


def test_cancel_kills_the_remote_process_group(sshd: SshServer, engine: BatchEngine) -> None:
    marker = f"sleep 320{uuid.uuid4().int % 1000}"
    cancel = threading.Event()
    job = Job(
        "k",
        password_spec(sshd),
        ExecRequest(marker, timeout=60),
        cancel=cancel,
        on_started=lambda _pgid: cancel.set(),
    )
    got = result(engine.run_many([job])[0])
    assert got.cancelled and not got.timed_out
    assert got.exit_status is None
    assert_gone(sshd, marker)


def test_a_warm_batch_reuses_its_connections(sshd: SshServer, engine: BatchEngine) -> None:
    jobs = [Job(n, password_spec(sshd), ExecRequest("echo hi")) for n in range(3)]
    assert all(result(o).stdout == "hi\n" for o in engine.run_many(jobs))
    assert engine.connections_opened == 3
    assert all(result(o).stdout == "hi\n" for o in engine.run_many(jobs))
    assert engine.connections_opened == 3
    engine.close(0)
    assert all(result(o).stdout == "hi\n" for o in engine.run_many(jobs))
    assert engine.connections_opened == 4
    assert engine.close_idle(0) == 3
    assert engine.pooled() == 0


def test_a_changed_spec_gets_a_new_connection(sshd: SshServer, engine: BatchEngine) -> None:
    assert result(run_one(engine, password_spec(sshd), "true")).exit_status == 0
    outcome = run_one(engine, password_spec(sshd, password="revoked 1"), "true")
    assert isinstance(outcome, AuthenticationFailed)
    assert engine.connections_opened == 2


def session_processes(sshd: SshServer) -> set[str]:
    """PIDs of the user's sshd session processes (one per connection)."""
    return set(sshd.user_processes(f"sshd.*{sshd.user}"))


def test_a_dropped_connection_is_opened_again(sshd: SshServer, engine: BatchEngine) -> None:
    key = f"drop-{uuid.uuid4()}"
    before = session_processes(sshd)
    assert result(run_one(engine, password_spec(sshd), "true", key=key)).exit_status == 0
    ours = wait_until(lambda: session_processes(sshd) - before, 5.0)
    for pid in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    got = result(run_one(engine, password_spec(sshd), "echo again", key=key))
    assert got.stdout == "again\n"
    assert engine.connections_opened == 2


def test_a_connection_lost_while_a_command_runs_is_reported(sshd: SshServer, engine: BatchEngine) -> None:
    key = f"lost-{uuid.uuid4()}"
    before = session_processes(sshd)
    marker = f"sleep 330{uuid.uuid4().int % 1000}"

    def kill_session(_pgid: int) -> None:
        for pid in session_processes(sshd) - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)

    job = Job(key, password_spec(sshd), ExecRequest(marker, timeout=30), on_started=kill_session)
    outcome = engine.run_many([job])[0]
    assert isinstance(outcome, ConnectionLost), outcome


def test_a_closed_port_fails_cleanly(engine: BatchEngine) -> None:
    spec = ConnectSpec(
        "127.0.0.1", free_port(), "nobody", password="x", trusted_keys=(("ssh-ed25519", "AAAA"),)
    )
    outcome = run_one(engine, spec, "true")
    assert isinstance(outcome, ConnectFailed)
    assert "refused" in str(outcome)


def test_a_spec_with_hops_is_refused(sshd: SshServer, engine: BatchEngine) -> None:
    spec = password_spec(sshd, hops=(password_spec(sshd),))
    with pytest.raises(ValueError, match="hops"):
        engine.run_many([Job("k", spec, ExecRequest("true"))])


def test_a_server_that_never_speaks_times_out(engine: BatchEngine) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        spec = ConnectSpec("127.0.0.1", port, "nobody", password="x", connect_timeout=0.5)
        outcome = run_one(engine, spec, "true")
    assert isinstance(outcome, ConnectFailed)
    assert str(outcome) == f"timed out after 0.5 s connecting to 127.0.0.1:{port}"


def test_connects_are_bounded_and_names_are_resolved(sshd: SshServer) -> None:
    bounded = BatchEngine(connects_at_once=2)
    try:
        jobs = [Job(n, password_spec(sshd, address="localhost"), ExecRequest(f"echo {n}")) for n in range(6)]
        outcomes = bounded.run_many(jobs)
        assert [result(o).stdout for o in outcomes] == [f"{n}\n" for n in range(6)]
        assert bounded.most_connecting == 2
    finally:
        bounded.close_all()


def test_idle_connections_are_closed_by_the_loop(sshd: SshServer) -> None:
    idle = BatchEngine(idle_timeout=0.3)
    try:
        assert result(run_one(idle, password_spec(sshd), "true")).exit_status == 0
        wait_until(lambda: idle.pooled() == 0, 5.0, "the idle connection closed")
    finally:
        idle.close_all()


def test_closing_a_connection_under_a_running_command_reports_it_lost(
    sshd: SshServer, engine: BatchEngine
) -> None:
    marker = f"sleep 360{uuid.uuid4().int % 1000}"
    job = Job(
        "k", password_spec(sshd), ExecRequest(marker, timeout=30), on_started=lambda _pgid: engine.close("k")
    )
    outcome = engine.run_many([job])[0]
    assert isinstance(outcome, ConnectionLost), outcome
    assert "may have run in part" in str(outcome)


def test_a_failing_loop_ends_its_jobs_and_goes_on(
    sshd: SshServer, engine: BatchEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"sleep 370{uuid.uuid4().int % 1000}"
    broken = threading.Event()
    original = BatchEngine._keepalives

    def fail_once(now: float) -> None:
        if broken.is_set():
            broken.clear()
            raise RuntimeError("a bug in the loop")
        original(engine, now)

    # This engine's only: the process's own engine (other tests' batches) runs its loop too.
    monkeypatch.setattr(engine, "_keepalives", fail_once)
    job = Job(
        "k", password_spec(sshd), ExecRequest(marker, timeout=30), on_started=lambda _pgid: broken.set()
    )
    outcome = engine.run_many([job])[0]
    assert isinstance(outcome, ConnectionLost), outcome
    assert "batch engine loop" in caplog.text
    assert result(run_one(engine, password_spec(sshd), "echo still")).stdout == "still\n"


@pytest.fixture
def fake_server() -> Iterator[Impostor]:
    """tests/ssh/test_impostor.py's server: records every authentication request, accepts none."""
    server = Impostor(new_ed25519_key())
    yield server
    server.close()


@pytest.mark.parametrize("stored", ["another ed25519 key", "a key of another type", "none (unknown host)"])
def test_a_server_with_the_wrong_host_key_sees_no_login_attempt(
    fake_server: Impostor, engine: BatchEngine, stored: str
) -> None:
    # Control: the engine trusting the impostor's key sends the password, and the recorder hears it.
    control = run_one(engine, impostor_spec(fake_server, pinned(fake_server.key)), "true", key="control")
    assert isinstance(control, AuthenticationFailed)
    assert f"password for victim: {SECRET}" in fake_server.attempts_once_settled()
    fake_server.reset()
    trusted_keys = {
        "another ed25519 key": pinned(new_ed25519_key()),
        "a key of another type": pinned(paramiko.ECDSAKey.generate()),
        "none (unknown host)": (),
    }[stored]
    outcome = run_one(engine, impostor_spec(fake_server, trusted_keys), "true", key=stored)
    assert isinstance(outcome, HostKeyUnknown | HostKeyChanged), outcome
    assert isinstance(outcome, HostKeyUnknown if not trusted_keys else HostKeyChanged)
    assert outcome.seen == seen_key(fake_server.key)
    assert SECRET not in str(outcome)
    assert fake_server.attempts_once_settled() == []
