"""Real Celery workers on a real broker, sharing the test database with the test process.

Two ``celery -A sshcontrol worker --pool threads`` processes per broker (Redis, then
RabbitMQ), started once per run; ``mcp_serve`` runs as a stdio subprocess with the same
broker, so it holds no sessions itself. Tests use ``transactional_db`` so that rows the
test writes are committed and visible to the workers.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.celery_worker import worker_command
from tests.database import database_url

REPO = Path(__file__).resolve().parents[2]
BROKERS = {
    "redis": "redis://127.0.0.1:6379/7",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
HEARTBEAT = "0.5"


def reachable(url: str) -> bool:
    parsed = urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


def service_env(broker_url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "SSHCONTROL_DATA_DIR": os.environ["SSHCONTROL_DATA_DIR"],
        "SSHCONTROL_FIELD_KEYS": os.environ["SSHCONTROL_FIELD_KEYS"],
        "SSHCONTROL_BROKER_URL": broker_url,
        "DATABASE_URL": database_url(),
        "SSHCONTROL_WORKER_HEARTBEAT_SECONDS": HEARTBEAT,
        "SSHCONTROL_LOG_LEVEL": "WARNING",
        **extra,
    }


class WorkerPool:
    """Two named workers; ``ensure()`` restarts any that a test killed.

    Their transfer directory is their own, not the one of the test process and ``mcp_serve``:
    as on other machines, a local path must reach them through the transfer stream.
    """

    def __init__(self, broker_url: str, logdir: Path) -> None:
        self.broker_url = broker_url
        self.logdir = logdir
        self.transfer_root = logdir / "worker-transfers"
        self.transfer_root.mkdir(mode=0o700, exist_ok=True)
        tag = secrets.token_hex(3)
        self.names = [f"sshc{tag}w1@{socket.gethostname()}", f"sshc{tag}w2@{socket.gethostname()}"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with (self.logdir / f"{name.split('@')[0]}.log").open("ab") as log:  # the worker keeps its copy
            self.procs[name] = subprocess.Popen(
                worker_command(name, 16),
                env=service_env(
                    self.broker_url,
                    SSHCONTROL_LOCAL_ROOT=str(self.transfer_root),
                    # A transfer whose caller vanished is given up within seconds (tests of a broken stream).
                    SSHCONTROL_TRANSFER_STALL_SECONDS="8",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def ensure(self) -> None:
        for name in self.names:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                self.start(name)
        self.wait_live(self.names)

    def wait_live(self, names: list[str], seconds: float = 60) -> None:
        from sshcontrol.holders import live_workers

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if set(names) <= set(live_workers()):
                return
            for name in names:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited with {proc.returncode}; see {self.logdir}")
            time.sleep(0.1)
        raise RuntimeError(f"workers {names} did not report a heartbeat; see {self.logdir}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session", params=list(BROKERS))
def worker_pool(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerPool]:
    url = BROKERS[request.param]
    if not reachable(url):
        if os.environ.get("CI"):
            pytest.fail(f"{request.param} is not running at {url}; .ci/run must start it")
        pytest.skip(f"{request.param} is not running at {url}")
    pool = WorkerPool(url, tmp_path_factory.mktemp(f"workers-{request.param}"))
    try:
        with django_db_blocker.unblock():
            pool.ensure()
        yield pool
    finally:
        pool.stop_all()  # also when they never came up: no worker outlives the run


@pytest.fixture
def workers(worker_pool: WorkerPool, transactional_db: None) -> WorkerPool:
    """Both workers alive (restarted if a previous test killed one) for this test."""
    worker_pool.ensure()
    return worker_pool
