"""File transfer throughput: sshcontrol's ssh_upload_file / ssh_download_file beside OpenSSH and paramiko.

Every contender moves the same file (random bytes, 100 MiB by default, ``--size-mib 1024``
for 1 GiB) up to and down from one freshly started loopback sshd (the test suite's
SshServer), three times each way, rounds interleaved so the machine's noise falls on all
alike; the median is reported in MiB/s with ratios against the references measured in the
same run. All files live on tmpfs (/dev/shm), local and remote alike, so no disk is timed.

Contenders (one function each, returning a :class:`Contender`; add yours to CONTENDERS):

- sshcontrol embedded: a real ``mcp_serve`` over stdio (the stdio MCP client, as Claude Code
  launches it), a session opened beforehand, ``local_path`` in its transfer directory. The
  peak RSS of that process (``VmHWM``, reset before each transfer) is reported per direction.
- ``scp`` and ``sftp -b``: OpenSSH, a fresh connection each time (what a person would run).
- raw paramiko SFTP on an open connection: ``putfo`` / ``getfo`` (prefetching), with
  paramiko's default cipher order (aes128-ctr first) and with aes128-gcm preferred.
- ``rsync -e ssh`` when rsync is installed (a whole-file copy: the destination never exists).
- sshcontrol distributed: the same tools, the session held by one Celery worker whose
  transfer directory differs from ``mcp_serve``'s (as on another machine), so the bytes
  stream through a private Redis broker; peak RSS of ``mcp_serve``, the worker and Redis.
- the peer: blc-ssh-mcp 0.9.1 (PyPI), its stdio server driven by the same MCP client, its own
  connection kept open, its process's peak RSS reported like ours; skipped (saying how to
  install it) when ``.peer-blc-ssh-mcp`` is absent, and above 100 MiB, which it refuses.

  Peers tried on 2026-11-30 (MCP servers whose tools move a file by local path; 100 MiB
  against this bench's sshd and key, one screen per server, then three interleaved runs of the
  front ones; MiB/s up / down, ranges over those runs, on 2 cores at load 6-21, where raw
  paramiko (ctr) did 45-159 / 46-124):

  - blc-ssh-mcp 0.9.1 (PyPI, asyncssh SFTP): kept. 79-97 / 84-135, the fastest up + down in
    two of the three interleaved runs and within 7% of the fastest in the third; checks host
    keys (asyncssh's default: the host must be in ~/.ssh/known_hosts).
  - ssh-mcp-new 1.0.2 (PyPI, our predecessor): dropped, 32-100 / 35-97 (paramiko put/get, so
    raw paramiko's speed at best: 108 / 102 at 1 GiB where raw paramiko did 116 / 98);
    runs only after ``pip install "mcp<2"`` (it imports 1.x's FastMCP, its ``mcp`` is unpinned),
    RSA keys only, no host key check (AutoAddPolicy).
  - sshand 0.2.4 (PyPI): dropped, 49-82 / 83-105 (paramiko put/get); no host key check.
  - mcp-remote-ssh 0.4.0 (PyPI): dropped, 26-92 / 25-120 (paramiko put/get); no host key check.
  - ssh-mcp-bridge 2.2.0 (PyPI): dropped, 20-76 / 39-97 (paramiko put/get); no host key check.
  - ssh-mcp-vn 0.7.1 (PyPI, Python >= 3.12): dropped, 43-60 / 28-66 (asyncssh, a new
    connection and a SHA-256 pass per transfer, files only in a staging dir); no host key check.
  - ssh-mcp-server 0.2.0 (PyPI): dropped, no file transfer tool (commands only).
  - ssh-mcp 2.11.0 (npm, bench/output.py's peer): dropped, 2 / 8-20 (``sftp-upload-file`` /
    ``sftp-download-file`` need a config file naming a transfer root); pins host keys.
  - mcp-ssh-manager 3.8.5 (npm, ssh2 fastPut/fastGet): dropped, 50-124 / 26-61; its host key
    verifier accepts any key.
  - @marian-craciunescu/ssh-mcp-server-secured 1.0.23 (npm): dropped, 19-61 / 1; no host key
    check.

  (The npm ones were measured before and after building ssh2's native crypto and
  cpu-features, which npm 11 skips until ``npm install-scripts approve ssh2 cpu-features`` and
  ``npm rebuild``: the order did not change.)

    sudo .venv/bin/python bench/transfer.py [--size-mib 100] [--runs 3] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Deployment, RedisServer, children_named, process_cpu, raw_client

from tests.sshd import SshServer

T = TypeVar("T")
MIB = 1 << 20
TMPFS = Path("/dev/shm")


@dataclass
class Bench:
    """What every contender shares: the server, the source file, where remote files go."""

    server: SshServer
    size: int
    workdir: Path  # local, on tmpfs
    remote_dir: Path  # on tmpfs too, owned by the test user
    source: Path  # the file every contender uploads
    remote_source: str  # the file every contender downloads (same bytes)
    sha256: str

    def known_hosts(self) -> Path:
        path = self.workdir / "known_hosts"
        if not path.exists():
            key = self.server.host_key("ed25519")
            path.write_text(
                f"[{self.server.address}]:{self.server.port} {key.get_name()} {key.get_base64()}\n"
            )
        return path

    def ssh_options(self) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={self.known_hosts()}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-i",
            str(self.server.client_keys["ed25519"]),
        ]

    @property
    def login(self) -> str:
        return f"{self.server.user}@{self.server.address}"


@dataclass
class Contender:
    """One way of moving the file. ``upload``/``download`` move it once; timing is done outside.

    ``peak_rss`` (optional) names the processes whose peak memory is reported, as
    ``{label: pid}``; their ``VmHWM`` is reset before each transfer.
    """

    name: str
    upload: Callable[[Path, str], None]  # (local source, remote destination)
    download: Callable[[str, Path], None]  # (remote source, local destination)
    close: Callable[[], None] = lambda: None
    pids: Callable[[], dict[str, int]] = dict
    reference: bool = False
    # CPU seconds used so far by the client side of this contender (its own process, or the
    # reaped OpenSSH children): a measure the machine's other load barely disturbs.
    cpu: Callable[[], float] = lambda: _children_cpu()


# -- the contenders ------------------------------------------------------------------------------


def openssh_scp(bench: Bench) -> Contender:
    port = ["-P", str(bench.server.port)]

    def upload(local: Path, remote: str) -> None:
        run(["scp", "-q", *bench.ssh_options(), *port, str(local), f"{bench.login}:{remote}"])

    def download(remote: str, local: Path) -> None:
        run(["scp", "-q", *bench.ssh_options(), *port, f"{bench.login}:{remote}", str(local)])

    return Contender("scp (fresh connection)", upload, download, reference=True)


def openssh_sftp_batch(bench: Bench) -> Contender:
    port = ["-P", str(bench.server.port)]

    def batch(line: str) -> None:
        run(["sftp", "-q", *bench.ssh_options(), *port, "-b", "-", bench.login], stdin=line + "\n")

    return Contender(
        "sftp -b (fresh connection)",
        lambda local, remote: batch(f'put "{local}" "{remote}"'),
        lambda remote, local: batch(f'get "{remote}" "{local}"'),
    )


def rsync_over_ssh(bench: Bench) -> Contender | None:
    if shutil.which("rsync") is None:
        return None
    shell = " ".join(["ssh", *bench.ssh_options(), "-p", str(bench.server.port)])

    def upload(local: Path, remote: str) -> None:
        run(["rsync", "-W", "-e", shell, str(local), f"{bench.login}:{remote}"])

    def download(remote: str, local: Path) -> None:
        run(["rsync", "-W", "-e", shell, f"{bench.login}:{remote}", str(local)])

    return Contender("rsync -e ssh (fresh connection)", upload, download)


def _paramiko(bench: Bench, name: str, ciphers: tuple[str, ...] | None) -> Contender:
    client = raw_client(bench.server, ciphers=ciphers)
    sftp = client.open_sftp()

    def upload(local: Path, remote: str) -> None:
        with local.open("rb") as source:
            sftp.putfo(source, remote)

    def download(remote: str, local: Path) -> None:
        with local.open("wb") as dest:
            sftp.getfo(remote, dest)

    def close() -> None:
        sftp.close()
        client.close()

    cipher = client.get_transport().remote_cipher
    return Contender(f"{name} ({cipher})", upload, download, close, reference=True, cpu=time.process_time)


def paramiko_default(bench: Bench) -> Contender:
    return _paramiko(bench, "raw paramiko SFTP, open connection", None)


def paramiko_gcm(bench: Bench) -> Contender:
    return _paramiko(bench, "raw paramiko SFTP, open connection", ("aes128-gcm@openssh.com",))


class McpClient:
    """A stdio MCP client on its own event loop thread, so contenders stay synchronous.

    ``params`` is the ``StdioServerParameters`` of the server to launch (ours or a peer's).
    """

    def __init__(self, params: Any) -> None:
        from mcp import Client

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = Client(params)
        self._stop = asyncio.Event()
        entered: Future[None] = Future()
        # Entered and exited in one task: anyio's cancel scopes demand it.
        self._lifetime = asyncio.run_coroutine_threadsafe(self._hold(entered), self.loop)
        entered.result(60)

    async def _hold(self, entered: Future[None]) -> None:
        async with self.client:
            entered.set_result(None)
            await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(3600)

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """The tool's ``CallToolResult``; a tool error raises, with its text."""
        result = self.run(self.client.call_tool(tool, arguments))
        if result.is_error:
            raise RuntimeError(f"{tool}: {result.content}")
        return result

    def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = self.call(tool, {**arguments, "response_format": "json"})
        content: dict[str, Any] = result.structured_content or {}
        return content

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._lifetime.result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _start_mcp(deployment: Deployment) -> tuple[McpClient, int]:
    """A stdio client of a new mcp_serve, and that process's id."""
    return _start_stdio(deployment.server_params(), "mcp_serve")


def _start_stdio(params: Any, word: str) -> tuple[McpClient, int]:
    """A stdio client of a new server, and the id of the child whose command line has ``word``."""
    running = set(children_named(word))
    client = McpClient(params)
    return client, _only([p for p in children_named(word) if p not in running], word)


def sshcontrol_embedded(bench: Bench) -> Contender:
    """ssh_upload_file / ssh_download_file through a real mcp_serve over stdio (sessions held in it)."""
    deployment = Deployment(bench.server)
    transfers = bench.workdir / "sshcontrol-transfers"
    transfers.mkdir(mode=0o700)
    deployment.env["SSHCONTROL_LOCAL_ROOT"] = str(transfers)
    # A round of 1 GiB transfers by the others can outlast the default idle timeout (15 min).
    deployment.env["SSHCONTROL_SESSION_IDLE_TIMEOUT"] = "86400"
    deployment.setup()
    client, pid = _start_mcp(deployment)
    session_id = client.ok("ssh_connect", host="bench")["session_id"]
    return _through_mcp(
        bench, "sshcontrol embedded (mcp_serve, stdio)", client, session_id, transfers, {"mcp_serve": pid}
    )


def sshcontrol_distributed(bench: Bench) -> Contender | None:
    """The same tools with the session held by a Celery worker whose transfer directory is not mcp_serve's.

    As on two machines: mcp_serve streams the file through the broker (a private Redis) to the
    worker that holds the session (sshcontrol/transfer_relay.py, filestream.py). One worker,
    so the peak memory reported is the holder's; Redis's own peak is reported too.
    """
    if shutil.which("redis-server") is None:
        return None
    redis = RedisServer().start()
    deployment = Deployment(bench.server, distributed=True, broker_url=redis.url)
    serve_root = bench.workdir / "distributed-serve-transfers"
    worker_root = bench.workdir / "distributed-worker-transfers"
    for root in (serve_root, worker_root):
        root.mkdir(mode=0o700)
    deployment.env["SSHCONTROL_LOCAL_ROOT"] = str(serve_root)
    deployment.env["SSHCONTROL_SESSION_IDLE_TIMEOUT"] = "86400"
    deployment.worker_env["SSHCONTROL_LOCAL_ROOT"] = str(worker_root)
    deployment.worker_count = 1
    try:
        deployment.setup()
        client, pid = _start_mcp(deployment)
        session_id = client.ok("ssh_connect", host="bench")["session_id"]
    except BaseException:
        deployment.close()
        redis.stop()
        raise
    assert redis.proc is not None
    pids = {"mcp_serve": pid, "worker": deployment.workers[0].pid, "redis-server": redis.proc.pid}
    made = _through_mcp(
        bench, "sshcontrol distributed (Redis, separate dirs)", client, session_id, serve_root, pids
    )

    def close() -> None:
        client.close()
        leaked = list(worker_root.iterdir())
        deployment.close()
        redis.stop()
        if leaked:
            raise RuntimeError(f"the worker wrote to its own transfer directory: {leaked}")

    made.close = close
    # The client side of this row is two processes: what both used.
    made.cpu = lambda: process_cpu(pids["mcp_serve"]) + process_cpu(pids["worker"])
    return made


def _through_mcp(
    bench: Bench, name: str, client: McpClient, session_id: str, transfers: Path, pids: dict[str, int]
) -> Contender:
    """The sshcontrol rows: the file is linked into the transfer directory (same tmpfs)."""

    def upload(local: Path, remote: str) -> None:
        inside = transfers / local.name
        if not inside.exists():
            os.link(local, inside)
        done = client.ok("ssh_upload_file", session_id=session_id, local_path=local.name, remote_path=remote)
        assert done["sha256"] == bench.sha256, "upload digest differs"

    def download(remote: str, local: Path) -> None:
        inside = transfers / local.name
        done = client.ok(
            "ssh_download_file", session_id=session_id, remote_path=remote, local_path=local.name
        )
        assert done["sha256"] == bench.sha256, "download digest differs"
        os.replace(inside, local)

    return Contender(
        name, upload, download, client.close, lambda: pids, cpu=lambda: process_cpu(pids["mcp_serve"])
    )


# -- the peer server -----------------------------------------------------------------------------

# blc-ssh-mcp (PyPI), the fastest peer that moves a file by local path here (the module
# docstring says which others were tried). It lives in its own git-ignored venv:
PEER_DIR = REPO / ".peer-blc-ssh-mcp"
PEER_SERVER = PEER_DIR / "bin" / "blc-ssh-mcp"
PEER_INSTALL = f"python3 -m venv {PEER_DIR} && {PEER_DIR}/bin/pip install blc-ssh-mcp==0.9.1"
# Its transfers refuse files over 100 MiB (ssh_mcp/ssh.py's _MAX_SFTP_BYTES, a module constant
# in 0.9.1, no setting), so at 1 GiB it has no row.
PEER_MAX_BYTES = 100 * MIB


def peer_blc_ssh_mcp(bench: Bench) -> Contender | None:
    """blc-ssh-mcp's upload_file / download_file over stdio, as Claude Code would launch it.

    Configured as its README says: a servers.toml naming the sshd, its key and port, and a
    transfer root (0700) that local paths are relative to. It checks host keys (asyncssh's
    default: the host must be in ~/.ssh/known_hosts), so its throwaway home gets the sshd's
    pinned key there, as the OpenSSH rows get it. Its connection is opened before the first
    transfer (an ``execute`` of ``true``), as ssh_connect opens sshcontrol's, and kept.
    """
    if not PEER_SERVER.is_file():
        print(f"peer: skipped, blc-ssh-mcp is not installed in {PEER_DIR}; install it with")
        print(f"    {PEER_INSTALL}")
        return None
    if bench.size > PEER_MAX_BYTES:
        print(f"peer: skipped, blc-ssh-mcp 0.9.1 refuses files over {PEER_MAX_BYTES // MIB} MiB")
        return None
    from mcp import StdioServerParameters

    home = bench.workdir / "peer-home"
    (home / ".ssh").mkdir(mode=0o700, parents=True)
    (home / ".ssh" / "config").write_text("")  # its default ssh_config: ours must not leak in
    shutil.copyfile(bench.known_hosts(), home / ".ssh" / "known_hosts")
    transfers = bench.workdir / "peer-transfers"
    transfers.mkdir(mode=0o700)
    config = home / "servers.toml"
    server = bench.server
    config.write_text(
        # The idle timeout outlasts a round of 1 GiB transfers by the others (default 300 s).
        "[settings]\nconnection_idle_timeout = 86400\n\n"
        f'[servers.bench]\ndescription = "bench"\nhostname = "{server.address}"\nport = {server.port}\n'
        f'user = "{server.user}"\nidentity_file = "{server.client_keys["ed25519"]}"\n'
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "SSH_MCP_CONFIG": str(config),
        "SSH_MCP_TRANSFER_ROOT": str(transfers),
    }
    client, pid = _start_stdio(StdioServerParameters(command=str(PEER_SERVER), env=env), str(PEER_SERVER))

    def call(tool: str, arguments: dict[str, Any], success: str) -> None:
        # Its failures (an untrusted host key among them) come back as text, not as isError.
        text = "".join(getattr(part, "text", "") for part in client.call(tool, arguments).content)
        if success not in text:
            raise RuntimeError(f"blc-ssh-mcp {tool}: {text[:500]}")

    try:
        call("execute", {"server": "bench", "command": "true"}, "Exit code: 0")
    except BaseException:
        client.close()
        raise

    def upload(local: Path, remote: str) -> None:
        inside = transfers / local.name
        if not inside.exists():
            os.link(local, inside)
        call("upload_file", {"server": "bench", "local_path": local.name, "remote_path": remote}, "Uploaded")

    def download(remote: str, local: Path) -> None:
        arguments = {"server": "bench", "remote_path": remote, "local_path": local.name}
        call("download_file", arguments, "Downloaded")
        os.replace(transfers / local.name, local)

    return Contender(
        "peer: blc-ssh-mcp 0.9.1 (stdio, asyncssh)",
        upload,
        download,
        client.close,
        lambda: {"blc-ssh-mcp": pid},
        cpu=lambda: process_cpu(pid),
    )


# Every contender, in the order printed. A factory returns None when its tool is missing.
CONTENDERS: list[Callable[[Bench], Contender | None]] = [
    openssh_scp,
    openssh_sftp_batch,
    rsync_over_ssh,
    paramiko_default,
    paramiko_gcm,
    sshcontrol_embedded,
    sshcontrol_distributed,
    peer_blc_ssh_mcp,
]


# -- measuring -----------------------------------------------------------------------------------


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(args: list[str], stdin: str | None = None) -> None:
    subprocess.run(args, input=stdin, text=True, check=True, capture_output=True)


def _only(pids: list[int], word: str = "mcp_serve") -> int:
    if len(pids) != 1:
        raise RuntimeError(f"expected one new {word} process, found {pids}")
    return pids[0]


def reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


@dataclass
class Samples:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"up": [], "down": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"up": [], "down": []})
    # Per direction and process: (RSS before, peak during) in KiB, the largest peak of the runs.
    rss: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # Per process: RSS before its first transfer, and the largest peak of all (KiB): what a
    # process's first transfer sets up is hidden in the per-run growth above.
    first: dict[str, int] = field(default_factory=dict)
    highest: dict[str, int] = field(default_factory=dict)


def measure(bench: Bench, contender: Contender, samples: Samples, round_no: int) -> None:
    slug = "".join(c if c.isalnum() else "-" for c in contender.name)[:40]
    remote_up = f"{bench.remote_dir}/up-{slug}-{round_no}"
    local_down = bench.workdir / f"down-{slug}-{round_no}"
    for direction in ("up", "down"):
        pids = contender.pids()
        before = {label: memory(pid)["VmRSS"] for label, pid in pids.items()}
        for label, kib in before.items():
            samples.first.setdefault(label, kib)
        for pid in pids.values():
            reset_peak(pid)
        cpu = contender.cpu()
        start = time.perf_counter()
        if direction == "up":
            contender.upload(bench.source, remote_up)
        else:
            contender.download(bench.remote_source, local_down)
        samples.seconds[direction].append(time.perf_counter() - start)
        samples.cpu[direction].append(contender.cpu() - cpu)
        for label, pid in pids.items():
            peak = memory(pid)["VmHWM"]
            old = samples.rss.get((direction, label), (0, 0))
            samples.rss[(direction, label)] = (before[label], max(peak, old[1]))
            samples.highest[label] = max(peak, samples.highest.get(label, 0))
    # Checked outside the timing: every contender must have moved the very bytes.
    if sha256_file(Path(remote_up)) != bench.sha256 or sha256_file(local_down) != bench.sha256:
        raise RuntimeError(f"{contender.name}: the copy differs from the source")
    Path(remote_up).unlink()
    local_down.unlink()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(server: SshServer, size: int) -> Bench:
    workdir = Path(tempfile.mkdtemp(prefix="sshc-bench-transfer-", dir=TMPFS))
    remote_dir = Path(tempfile.mkdtemp(prefix="sshc-bench-remote-", dir=TMPFS))
    shutil.chown(remote_dir, server.user, server.user)
    source = workdir / "source.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    remote_source = remote_dir / "source.bin"
    shutil.copyfile(source, remote_source)
    shutil.chown(remote_source, server.user, server.user)
    return Bench(server, size, workdir, remote_dir, source, str(remote_source), digest.hexdigest())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100, help="file size (1024 for 1 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="transfers each way per contender (median)")
    parser.add_argument("--only", default="", help="comma-separated factory names (e.g. openssh_scp)")
    args = parser.parse_args()
    wanted = {n for n in args.only.split(",") if n}
    load_before = os.getloadavg()
    server = SshServer.create().start()
    bench = prepare(server, args.size_mib * MIB)
    contenders: list[Contender] = []
    try:
        for factory in CONTENDERS:
            if wanted and factory.__name__ not in wanted:
                continue
            made = factory(bench)
            if made is not None:
                contenders.append(made)
        results = {c.name: Samples() for c in contenders}
        for round_no in range(args.runs):
            for contender in contenders:
                measure(bench, contender, results[contender.name], round_no)
    finally:
        for contender in contenders:
            try:
                contender.close()
            except Exception as exc:  # the others must still close, and the server stop
                print(f"closing {contender.name}: {exc!r}", file=sys.stderr)
        server.remove()
        shutil.rmtree(bench.workdir, ignore_errors=True)
        shutil.rmtree(bench.remote_dir, ignore_errors=True)
    report(bench, contenders, results, args.runs)
    # Seconds depend on what else runs on the machine; ratios within one run hold better.
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}")


def report(bench: Bench, contenders: list[Contender], results: dict[str, Samples], runs: int) -> None:
    size_mib = bench.size / MIB
    rate = {
        (name, d): size_mib / statistics.median(s.seconds[d])
        for name, s in results.items()
        for d in ("up", "down")
    }
    print(f"{size_mib:g} MiB each way, median of {runs}, loopback OpenSSH, files on tmpfs\n")
    cpu = {(n, d): statistics.median(s.cpu[d]) for n, s in results.items() for d in ("up", "down")}
    print(f"{'contender':<58} {'up MiB/s':>9} {'down MiB/s':>11} {'client CPU s up/down':>21}")
    for c in contenders:
        print(
            f"{c.name:<58} {rate[(c.name, 'up')]:>9.0f} {rate[(c.name, 'down')]:>11.0f} "
            f"{cpu[(c.name, 'up')]:>10.2f} / {cpu[(c.name, 'down')]:.2f}"
        )
    references = [c for c in contenders if c.reference]
    measured = [c for c in contenders if c.pids()]
    if references and measured:
        print("\nratios (>= 1.00: at least as fast as the reference)")
        for c in measured:
            for ref in references:
                up = rate[(c.name, "up")] / rate[(ref.name, "up")]
                down = rate[(c.name, "down")] / rate[(ref.name, "down")]
                print(f"  {c.name} / {ref.name}: up {up:.2f}, down {down:.2f}")
    for c in measured:
        print(f"\npeak memory of {c.name}")
        for (direction, label), (before, peak) in sorted(results[c.name].rss.items()):
            print(
                f"  {label} {direction:>4}: RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
                f"(+{(peak - before) / 1024:.1f} MiB)"
            )
        for label, start in sorted(results[c.name].first.items()):
            highest = results[c.name].highest[label]
            print(
                f"  {label}: RSS before its first transfer {start / 1024:.1f} MiB, highest peak "
                f"{highest / 1024:.1f} MiB (+{(highest - start) / 1024:.1f} MiB over all transfers)"
            )


if __name__ == "__main__":
    main()
