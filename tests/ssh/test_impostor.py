"""A server with the wrong host key sees no login attempt, even when ``~/.ssh/known_hosts`` vouches for it.

The impostor is a paramiko SSH server on loopback that records every authentication callback
its ``ServerInterface`` gets (any userauth request reaches one of them) and refuses them all.
Its key is written to the ``known_hosts`` of the HOME the test sets: an SSH client that read
that file would log in to it. A control in each test shows that the recorder does record a
client that trusts the impostor, so an empty record means no attempt, not a deaf recorder.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from audit.models import AuditEvent
from hosts.models import Credential, Host, HostKey
from sshlib.connect import ConnectSpec, fingerprint, load_private_key, open_connection, seen_key
from sshlib.errors import AuthenticationFailed, HostKeyChanged, HostKeyUnknown
from tests.hostkeys import trust
from tests.polling import wait_until

SECRET = "impostor-bait-" + "5f0c9e1d7a"  # the password an impostor must never receive


def new_ed25519_key() -> paramiko.PKey:
    text = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return load_private_key(text.decode())


class Recorder(paramiko.ServerInterface):
    """Writes down every authentication request it is asked about; accepts none."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._lock = threading.Lock()

    def _record(self, what: str) -> int:
        with self._lock:
            self.attempts.append(what)
        return paramiko.common.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        self._record(f"methods asked for {username}")
        return "password,publickey,keyboard-interactive"

    def check_auth_none(self, username: str) -> int:
        return self._record(f"none for {username}")

    def check_auth_password(self, username: str, password: str) -> int:
        return self._record(f"password for {username}: {password}")

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return self._record(f"publickey for {username}: {fingerprint(key)}")

    def check_auth_interactive(self, username: str, submethods: str) -> int:
        return self._record(f"keyboard-interactive for {username}")

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        return self._record(f"keyboard-interactive answers {responses}")

    def check_auth_gssapi_with_mic(
        self, username: str, gss_authenticated: int = 0, cc_file: str | None = None
    ) -> int:
        return self._record(f"gssapi-with-mic for {username}")

    def check_auth_gssapi_keyex(
        self, username: str, gss_authenticated: int = 0, cc_file: str | None = None
    ) -> int:
        return self._record(f"gssapi-keyex for {username}")


class Impostor:
    """An SSH server on a loopback port that presents ``key`` and records authentication requests."""

    def __init__(self, key: paramiko.PKey) -> None:
        self.key = key
        self.recorder = Recorder()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="impostor", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.set_log_channel("tests.impostor")
            transport.add_server_key(self.key)
            self.transports.append(transport)
            try:
                transport.start_server(server=self.recorder)
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def settled(self) -> bool:
        """Every connection made to it has ended, so whatever a client sent has been recorded."""
        return all(not t.is_active() for t in self.transports)

    def attempts_once_settled(self) -> list[str]:
        wait_until(lambda: self.transports and self.settled(), 10, "the client's connections ended")
        return list(self.recorder.attempts)

    def reset(self) -> None:
        wait_until(self.settled, 10, "the earlier connections ended")
        self.recorder.attempts.clear()
        self.transports.clear()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)
        for transport in self.transports:
            transport.close()


@pytest.fixture
def impostor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Impostor]:
    """The impostor, its key in the running user's ``~/.ssh/known_hosts`` (HOME set to a fresh directory)."""
    server = Impostor(new_ed25519_key())
    ssh_dir = tmp_path / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    entry = f"{server.key.get_name()} {server.key.get_base64()}\n"
    (ssh_dir / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {entry}127.0.0.1 {entry}")
    monkeypatch.setenv("HOME", str(tmp_path))
    yield server
    server.close()


def spec(server: Impostor, trusted_keys: tuple[tuple[str, str], ...]) -> ConnectSpec:
    return ConnectSpec(
        address="127.0.0.1",
        port=server.port,
        username="victim",
        password=SECRET,
        trusted_keys=trusted_keys,
        connect_timeout=5.0,
        secrets=(SECRET,),
    )


def pinned(key: paramiko.PKey) -> tuple[tuple[str, str], ...]:
    return ((key.get_name(), key.get_base64()),)


def assert_the_recorder_hears_a_client_that_trusts_it(server: Impostor) -> None:
    """Control: paramiko reading known_hosts logs in to the impostor, and the attempt is recorded."""
    client = paramiko.SSHClient()
    client.load_system_host_keys()  # ~/.ssh/known_hosts of the HOME the test set
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            "127.0.0.1",
            port=server.port,
            username="victim",
            password=SECRET,
            look_for_keys=False,
            allow_agent=False,
        )
    client.close()
    assert f"password for victim: {SECRET}" in server.attempts_once_settled()
    # And our own connect, trusting the impostor's key, sends the password too (so would a bug).
    with pytest.raises(AuthenticationFailed):
        open_connection(spec(server, pinned(server.key)))
    assert f"password for victim: {SECRET}" in server.attempts_once_settled()
    server.reset()


@pytest.mark.parametrize(
    "stored",
    ["another ed25519 key", "a key of another type", "none (unknown host)"],
)
def test_a_server_with_the_wrong_host_key_sees_no_login_attempt(impostor: Impostor, stored: str) -> None:
    assert_the_recorder_hears_a_client_that_trusts_it(impostor)
    trusted_keys = {
        "another ed25519 key": pinned(new_ed25519_key()),
        "a key of another type": pinned(paramiko.ECDSAKey.generate()),
        "none (unknown host)": (),
    }[stored]
    expected = HostKeyUnknown if not trusted_keys else HostKeyChanged
    with pytest.raises(expected) as refused:
        open_connection(spec(impostor, trusted_keys))
    assert isinstance(refused.value, HostKeyUnknown | HostKeyChanged)
    assert refused.value.seen == seen_key(impostor.key)
    assert SECRET not in str(refused.value)
    assert impostor.attempts_once_settled() == []


@pytest.mark.parametrize("tool", ["ssh_connect", "ssh_execute"])
def test_a_tool_call_to_a_moved_host_sends_the_impostor_nothing(
    impostor: Impostor, transactional_db: None, tool: str
) -> None:
    from sshlib.sessions import registry
    from tests.mcp.conftest import McpHarness

    assert_the_recorder_hears_a_client_that_trusts_it(impostor)
    credential = Credential(name="moved-cred", kind=Credential.Kind.PASSWORD)
    credential.set_secret(SECRET)
    credential.save()
    host = Host.objects.create(
        name="moved", address="127.0.0.1", port=impostor.port, username="victim", credential=credential
    )
    trust(host, new_ed25519_key())  # the real server's key
    arguments = {"host": "moved"} if tool == "ssh_connect" else {"host": "moved", "command": "true"}
    harness = McpHarness()
    try:
        message = harness.error(tool, **arguments)
    finally:
        harness.close()
        registry.close_all()
    assert "host key changed" in message.lower() and SECRET not in message
    assert impostor.attempts_once_settled() == []
    # Refused, stored pending for an admin to compare, and audited.
    pending = HostKey.objects.get(host=host, fingerprint=fingerprint(impostor.key))
    assert pending.state == HostKey.State.PENDING
    assert AuditEvent.objects.filter(tool=tool, host_name="moved").exclude(status="ok").exists()
