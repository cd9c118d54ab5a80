"""Shared set-up for the benchmarks: a loopback sshd, a registered host, optional workers.

Also a private loopback redis-server (so a benchmark's broker is not shared with other test
runs on the machine, and its CPU can be attributed) and per-process CPU accounting from
``/proc/<pid>/stat``.
"""

from __future__ import annotations

import contextlib
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

from tests.celery_worker import worker_command  # noqa: E402
from tests.sshd import SshServer  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/8"


def raw_client(server: SshServer, ciphers: tuple[str, ...] | None = None) -> Any:
    """The reference client: plain paramiko, one open connection, TCP_NODELAY, the pinned key.

    ``ciphers``: offered first, in this order (paramiko's own order otherwise: aes128-ctr first).
    """
    import paramiko

    def transport(*args: Any, **kwargs: Any) -> Any:
        made = paramiko.Transport(*args, **kwargs)
        if ciphers:
            options = made.get_security_options()
            options.ciphers = (*ciphers, *(c for c in options.ciphers if c not in ciphers))
        return made

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = server.host_key("ed25519")
    client.get_host_keys().add(f"[{server.address}]:{server.port}", key.get_name(), key)
    sock = socket.create_connection((server.address, server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(
        server.address,
        server.port,
        username=server.user,
        key_filename=str(server.client_keys["ed25519"]),
        sock=sock,
        look_for_keys=False,
        allow_agent=False,
        transport_factory=transport,
    )
    return client


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Deployment:
    """One data directory and database; embedded by default, or Redis + two Celery workers."""

    def __init__(self, server: SshServer, distributed: bool = False, broker_url: str = REDIS_URL) -> None:
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
            self.env["SSHCONTROL_BROKER_URL"] = broker_url
        self.workers: list[subprocess.Popen[bytes]] = []
        # Set only for the workers (a worker on another machine has its own transfer directory).
        self.worker_env: dict[str, str] = {}
        self.worker_count = 2

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
            for i in range(1, self.worker_count + 1):
                self.workers.append(
                    subprocess.Popen(
                        worker_command(f"bench{tag}w{i}@{socket.gethostname()}", 32),
                        env={**self.env, **self.worker_env},
                        cwd=REPO,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            try:
                self._wait_for_workers(self.worker_count)
            except BaseException:
                self.close()  # never leave workers behind
                raise
        return self

    def _wait_for_workers(self, count: int) -> None:
        query = "from sshcontrol.holders import live_workers; print(len(live_workers()))"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away redis-server on a free loopback port: no persistence, nothing shared."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


# -- CPU accounting --------------------------------------------------------------------------------

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def process_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds used by ``pid`` (user + system), plus its reaped children's when asked."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), counted from 1.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks * TICK


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat(pid)
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: each live process's own time plus what it reaped.

    A short-lived child (the shell that runs ``true`` under sshd) is counted once it has been
    reaped, in its parent's ``cutime``; live processes are counted by their own time only, so
    nothing is counted twice.
    """
    return sum(process_cpu(pid, children=True) for pid in descendants(root))


def children_named(word: str, parent: int | None = None) -> list[int]:
    """Live children of ``parent`` (default: this process) whose command line contains ``word``."""
    parent = os.getpid() if parent is None else parent
    found = []
    for pid in _all_pids():
        fields = _stat(pid)
        if fields is None or int(fields[1]) != parent:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if word in cmdline:
            found.append(pid)
    return found


def _cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or, hybrid, ``.../unified``)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


class CpuGroup:
    """The CPU time of some processes and of everything they start, from a cgroup v2 group.

    A process added here (and every process it forks afterwards, daemons included) is counted
    in the group's ``cpu.stat`` to the microsecond, whether it still runs or has exited. The
    per-process alternative, ``/proc/PID/stat``, counts in clock ticks (10 ms) per process:
    hundreds of sshd processes that each spend a millisecond per run, all with about the same
    time so far, read as nothing for several runs and then as a whole tick each at once. The
    group has no controller enabled: it only counts, it limits nothing. Without a writable
    cgroup v2 hierarchy (not root, no cgroup2 mount) ``tree_cpu`` of the added processes is used
    instead, and ``exact`` is False.
    """

    def __init__(self, name: str) -> None:
        self.roots: list[int] = []
        root = _cgroup2_root()
        self.path: Path | None = None
        if root is not None:
            path = root / f"sshcontrol-bench-{os.getpid()}-{name}"
            try:
                path.mkdir()
                self.path = path
            except OSError:
                pass

    @property
    def exact(self) -> bool:
        return self.path is not None

    def add(self, pid: int) -> None:
        """Count ``pid`` from now on (all its threads), and whatever it starts later."""
        self.roots.append(pid)
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid))

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` run through a shell that first joins this group (so all of its run is counted)."""
        if self.path is None:
            return command
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *command]

    def usage(self) -> float:
        """CPU seconds (user + system) of the group so far."""
        if self.path is None:
            return sum(tree_cpu(pid) for pid in self.roots)
        for line in (self.path / "cpu.stat").read_text().splitlines():
            name, value = line.split()
            if name == "usage_usec":
                return int(value) / 1e6
        raise RuntimeError(f"no usage_usec in {self.path / 'cpu.stat'}")

    def settled(self, quiet: float = 0.002, deadline: float = 3.0) -> float:
        """``usage`` once the group has stopped working (a run's processes wind down after it ends)."""
        last = self.usage()
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            time.sleep(0.05)
            now = self.usage()
            if now - last < quiet:
                return now
            last = now
        return last

    def close(self) -> None:
        """Move what still runs back to the root group and remove this one."""
        if self.path is None:
            return
        parent = self.path.parent / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it may have exited meanwhile
                parent.write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()
        self.path = None


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already included in user/nice.
    return (sum(fields[:8]) - idle) * TICK
