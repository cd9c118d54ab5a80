"""Shared set-up for the benchmarks: a loopback sshd, a registered host, optional workers."""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.sshd import SshServer  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/8"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Deployment:
    """One data directory and database; embedded by default, or Redis + two Celery workers."""

    def __init__(self, server: SshServer, distributed: bool = False) -> None:
        self.server = server
        self.distributed = distributed
        self.workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-bench-"))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "SSHCONTROL_DATA_DIR": str(self.workdir / "data"),
            "SSHCONTROL_FIELD_KEYS": Fernet.generate_key().decode(),
            "SSHCONTROL_LOG_LEVEL": "WARNING",
        }
        if distributed:
            self.env["DATABASE_URL"] = f"sqlite:///{self.workdir / 'shared.sqlite3'}"
            self.env["SSHCONTROL_BROKER_URL"] = REDIS_URL
        self.workers: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sshcontrol", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def setup(self) -> Deployment:
        if self.distributed:
            self.cli("migrate", "--verbosity", "0")
        s = self.server
        self.cli(
            "hosts",
            "add",
            "bench",
            "--address",
            s.address,
            "--port",
            str(s.port),
            "--username",
            s.user,
            "--key-file",
            str(s.client_keys["ed25519"]),
        )
        fingerprint = next(w for w in self.cli("hosts", "scan", "bench").split() if w.startswith("SHA256:"))
        self.cli("hosts", "trust", "bench", fingerprint)
        if self.distributed:
            tag = secrets.token_hex(3)
            for i in (1, 2):
                self.workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "sshcontrol",
                            "worker",
                            "--pool",
                            "threads",
                            "-c",
                            "32",
                            "-n",
                            f"bench{tag}w{i}@{socket.gethostname()}",
                            "--without-gossip",
                            "--without-mingle",
                            "--without-heartbeat",
                            "-l",
                            "WARNING",
                        ],
                        env=self.env,
                        cwd=REPO,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            try:
                self._wait_for_workers(2)
            except BaseException:
                self.close()  # never leave workers behind
                raise
        return self

    def _wait_for_workers(self, count: int) -> None:
        query = "from sshcontrol.workers import live_workers; print(len(live_workers()))"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if int(self.cli("shell", "--no-imports", "-c", query).strip().splitlines()[-1] or 0) >= count:
                return
            time.sleep(0.5)
        raise RuntimeError("workers did not start")

    def server_params(self) -> Any:
        from mcp import StdioServerParameters

        return StdioServerParameters(
            command=sys.executable, args=["-m", "sshcontrol", "mcp_serve"], env=self.env
        )

    def close(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
