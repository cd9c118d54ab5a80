"""Redis sees no secret of a call: its ``MONITOR`` stream during sudo calls through real workers.

docs/security.md (threat model, "A compromised worker"): credentials never travel in broker
messages or results; a worker decrypts them from the database only for the hosts it connects
to. Redis ``MONITOR`` echoes every command the server receives (task messages, results,
heartbeats, transfer streams), so a connection running it while ``mcp_serve`` and real workers
make a sudo call, a login with a passphrase-protected key and a login with a password must
show none of those secrets, in any encoding ``tests/leaks.py`` decodes (kombu base64-encodes
message bodies).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from mcp import Client

from hosts.clients import create_client
from hosts.models import Credential, Grant, Host
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import ok, run
from tests.hostkeys import trust
from tests.leaks import recoverable
from tests.sshd import SshServer

SUDO_PASSWORD = "monitor-sudo-Pw-3f9c1e-never-on-the-wire"  # the test user's login password meanwhile
CANARY = "monitor-canary-7d41b2"  # in a command: the task messages do travel through Redis


class Monitor:
    """A raw connection to Redis running ``MONITOR``, collecting what it echoes in a thread."""

    def __init__(self, url: str) -> None:
        parsed = urlsplit(url)
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 5)
        self.sock.sendall(b"MONITOR\r\n")
        self.sock.settimeout(0.2)
        self.chunks: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    def stop(self) -> bytes:
        self.stopping.set()
        self.thread.join(10)
        with contextlib.suppress(OSError):
            self.sock.close()
        return b"".join(self.chunks)


@pytest.fixture
def monitor(workers: WorkerPool) -> Iterator[Monitor]:
    watching = Monitor(workers.broker_url)
    try:
        yield watching
    finally:
        watching.stop()


@pytest.fixture
def other_sshd() -> Iterator[SshServer]:
    """Another account, logged in to with a password (the suite's own user's is changed here)."""
    server = SshServer.create().start()
    yield server
    server.remove()


@pytest.fixture
def sudo_password(sshd: SshServer, sudoers: None) -> Iterator[str]:
    """The suite user's login (and so sudo) password, set to a value used nowhere else."""
    subprocess.run(["chpasswd"], input=f"{sshd.user}:{SUDO_PASSWORD}\n", text=True, check=True)
    try:
        yield SUDO_PASSWORD
    finally:
        subprocess.run(["chpasswd"], input=f"{sshd.user}:{sshd.password}\n", text=True, check=True)


def register(server: SshServer, name: str, credential: Credential) -> Host:
    credential.save()
    host = Host.objects.create(
        name=name, address=server.address, port=server.port, username=server.user, credential=credential
    )
    for key in server.host_public_keys():
        trust(host, key)
    return host


@pytest.mark.parametrize("worker_pool", ["redis"], indirect=True)
def test_redis_sees_no_password_or_key_during_sudo_calls_on_workers(
    workers: WorkerPool,
    monitor: Monitor,
    sshd: SshServer,
    other_sshd: SshServer,
    sudo_password: str,
) -> None:
    assert sshd.encrypted_key is not None
    key_text = sshd.encrypted_key.read_text()
    keyed = Credential(name="keyed-cred", kind="private_key")
    keyed.store_private_key(key_text, sshd.encrypted_key_passphrase)
    keyed.set_sudo_password(sudo_password)
    passworded = Credential(name="pw-cred", kind="password")
    passworded.store_password(other_sshd.password)
    hosts = [register(sshd, "keyed", keyed), register(other_sshd, "pw", passworded)]
    issued = create_client("ops")
    grant = Grant.objects.create(client=issued.client, can_execute=True, can_sudo=True)
    grant.hosts.set(hosts)
    assert len({sudo_password, other_sshd.password, sshd.encrypted_key_passphrase}) == 3

    async def body(client: Client) -> list[dict[str, Any]]:
        return [
            await ok(client, "ssh_execute", host="keyed", command=f"echo {CANARY}; id -u", sudo=True),
            await ok(client, "ssh_execute_many", hosts=["keyed"], command="id -u", sudo=True),
            await ok(client, "ssh_execute", host="pw", command=f"echo {CANARY}"),
        ]

    root, many, plain = run(body, workers.broker_url, SSHCONTROL_CLIENT_TOKEN=issued.token)
    assert root["stdout"] == f"{CANARY}\n0\n" and many["results"][0]["stdout"] == "0\n"
    assert plain["stdout"] == f"{CANARY}\n"
    seen = monitor.stop()
    saw_the_calls = recoverable(CANARY, seen)
    assert saw_the_calls, "MONITOR saw the calls' task messages (else it proves nothing)"
    secrets = {
        "the sudo password": sudo_password,
        "the credential password": other_sshd.password,
        "the key's passphrase": sshd.encrypted_key_passphrase,
    }
    # Every line of the private key's body: any one of them is a piece of the key.
    secrets |= {f"line {i} of the private key": line for i, line in enumerate(key_lines(key_text))}
    # Named, not shown: the failure message must not print what MONITOR saw.
    leaked = [what for what, secret in secrets.items() if recoverable(secret, seen)]
    assert leaked == [], "went through Redis"


def key_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("-----")]
