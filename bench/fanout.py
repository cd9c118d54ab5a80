"""`true` on 50, 200 and 1,000 registered hosts: ssh_execute_many beside Ansible and parallel-ssh.

Several loopback sshd instances (the test suite's SshServer, each on its own port and with its
own user and keys) stand in for a fleet; hosts are spread over them round robin, and every
host entry gets its own SSH connection in all three tools (Ansible: one ControlMaster per
inventory host, ``ansible_control_path``). For each size, in the same run:

- sshcontrol: one embedded ``mcp_serve`` over stdio (a real MCP client), ``ssh_execute_many``
  with ``max_parallel`` 50; cold = a fresh server with no session, warm = the same call again.
- Ansible: ``ansible all -m raw -a true -f 50``, same inventory, ControlPersist on; cold = no
  master running, warm = the masters of the cold run.
- parallel-ssh: ``ParallelSSHClient(pool_size=50)``; cold = a new client, warm = the same
  client again. (It does not check host keys; sshcontrol and Ansible do.)

With ``--upload`` the same fleet instead receives one 10 MiB file (``UPLOAD_BYTES``, random,
written to a new file ``fanout-upload.bin`` in each login's home; hosts sharing a login
overwrite each other's copy, in every tool alike), cold and warm as above:

- sshcontrol: ``ssh_upload_many`` with ``local_path`` (a file of its transfer directory),
  ``overwrite`` true, ``max_parallel`` 50 (each host's SHA-256 checked against the source's).
- Ansible: ``ansible all -m copy -a "src=... dest=fanout-upload.bin" -f 50``.
- parallel-ssh: ``ParallelSSHClient.copy_file`` (SFTP) with ``pool_size`` 50.

Each run also reports CPU seconds: the tool's own processes (``client``) and the fleet's sshd
with everything it forks (``sshd``), counted in cgroup v2 groups (``common.CpuGroup``), and the
floor (client + sshd) / cores, the least wall time that much CPU allows on this machine: it
tells whether a target can be reached at all. ``--paramiko`` adds plain paramiko connections
in the bench process (no database, no MCP), the floor of any paramiko client; it sends the
product's wire form of ``true`` (``sshlib.execute.remote_command``: the shell's process group
printed first).

``--libssh2`` adds the floor of a C-library batch path: ``bench/refs/libssh2_fanout.py``
(ssh2-python, i.e. libssh2, in the references' environment) runs every host from one thread on
one epoll loop, non-blocking sessions, at most 50 at a time as the others, the pinned host key
compared, the key authenticated from memory, each command on its own channel read to EOF with
its exit status; two rows, plain ``true`` and the wire form. ``--libssh`` does the same with
ssh-python (libssh), ``bench/refs/libssh_fanout.py``. No database, no MCP in either.

The references live in their own virtual environment (``ansible-core``, ``parallel-ssh`` and,
for the C-library rows, ``ssh2-python`` and ``ssh-python`` from PyPI), so they never touch the
project's dependencies:

    python3 -m venv .venv-refs && .venv-refs/bin/pip install ansible-core parallel-ssh
    .venv-refs/bin/pip install ssh2-python ssh-python        # for --libssh2 / --libssh
    sudo .venv/bin/python bench/fanout.py [--sizes 50,200,1000] [--servers 4] [--refs .venv-refs] \
        [--warm-runs 3] [--paramiko] [--libssh2] [--libssh] [--skip-ansible]
    sudo .venv/bin/python bench/fanout.py --upload --sizes 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, CpuGroup, Deployment, children_named

from tests.sshd import SshServer

PARALLEL = 50
CORES = os.cpu_count() or 1
UPLOAD_BYTES = 10 * 1024 * 1024
UPLOAD_NAME = "fanout-upload.bin"
REFS_SCRIPTS = Path(__file__).resolve().parent / "refs"

SETUP_HOSTS = """
import json, sys
from hosts.models import Credential, Host, HostKey
from sshlib.connect import fingerprint
import paramiko, base64
spec = json.loads(sys.stdin.read())
credentials = []
for i, server in enumerate(spec["servers"]):
    c = Credential(name=f"fleet-{i}", kind="private_key")
    c.set_secret(server["key"])
    c.save()
    credentials.append(c)
hosts = Host.objects.bulk_create(
    [Host(name=h["name"], address="127.0.0.1", port=spec["servers"][h["server"]]["port"],
          username=spec["servers"][h["server"]]["user"], credential=credentials[h["server"]], tags=["fleet"])
     for h in spec["hosts"]]
)
keys = []
for host, h in zip(hosts, spec["hosts"]):
    for key_type, blob in spec["servers"][h["server"]]["host_keys"]:
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
        keys.append(HostKey(host=host, key_type=key_type, public_key=blob, fingerprint=fingerprint(key),
                            state=HostKey.State.TRUSTED, approved_by="bench"))
HostKey.objects.bulk_create(keys)
print(len(hosts))
"""

# Each reference script reads its spec (one JSON line), then runs once per "go" line it reads and
# answers each with one JSON line: [wall seconds, hosts failed]. The bench reads the CPU counters
# between the lines, so each run's cost is its own.
PSSH = """
import json, sys, time
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
spec = json.loads(sys.stdin.readline())
hosts = ["127.0.0.1"] * len(spec["hosts"])
config = [HostConfig(port=h["port"], user=h["user"], private_key=h["key_file"]) for h in spec["hosts"]]
client = ParallelSSHClient(hosts, host_config=config, pool_size=spec["parallel"], timeout=60)
for line in sys.stdin:
    started = time.perf_counter()
    output = client.run_command("true", stop_on_errors=False)
    client.join(output)
    wall = time.perf_counter() - started
    failed = sum(1 for o in output if o.exception is not None or o.exit_code != 0)
    print(json.dumps([wall, failed]), flush=True)
"""


PSSH_COPY = """
import json, sys, time
import gevent
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
spec = json.loads(sys.stdin.readline())
hosts = ["127.0.0.1"] * len(spec["hosts"])
config = [HostConfig(port=h["port"], user=h["user"], private_key=h["key_file"]) for h in spec["hosts"]]
client = ParallelSSHClient(hosts, host_config=config, pool_size=spec["parallel"], timeout=120)
for line in sys.stdin:
    started = time.perf_counter()
    greenlets = client.copy_file(spec["local"], spec["remote"])
    gevent.joinall(greenlets, raise_error=False)
    wall = time.perf_counter() - started
    failed = sum(1 for g in greenlets if g.exception is not None)
    print(json.dumps([wall, failed]), flush=True)
"""


@dataclass(frozen=True)
class Run:
    """One timed run of a tool: its wall time, its own processes' CPU and every sshd's CPU (seconds)."""

    wall: float
    client_cpu: float
    sshd_cpu: float

    @property
    def floor(self) -> float:
        """The least wall time this much CPU allows: all of it spread over every core of the machine."""
        return (self.client_cpu + self.sshd_cpu) / CORES


@dataclass(frozen=True)
class Runs:
    """A tool's cold run, then its warm runs (the table shows the median warm run, by wall time)."""

    cold: Run
    warm_runs: list[Run]

    @property
    def warm(self) -> Run:
        ordered = sorted(self.warm_runs, key=lambda run: run.wall)
        return ordered[(len(ordered) - 1) // 2]


@dataclass
class Meters:
    """CPU counters for one tool's runs: its own processes (``client``) and the fleet's sshd.

    sshd forks (and re-executes itself) per connection, and each connection forks the user's
    shell per command: all of that is in the ``sshd`` group, joined by the listeners when they
    start. A tool joins ``client`` when it starts (every process it starts follows, Ansible's
    ControlMasters too).
    """

    sshd: CpuGroup
    client: CpuGroup

    @contextmanager
    def run(self, runs: list[Run]) -> Iterator[None]:
        """Time the block; append its wall time and the CPU both groups spent meanwhile to ``runs``.

        Each reading waits until its group is idle: a run's processes wind down after the run.
        """
        sshd_before, client_before = self.sshd.settled(), self.client.settled()
        started = time.perf_counter()
        yield
        wall = time.perf_counter() - started
        runs.append(Run(wall, self.client.settled() - client_before, self.sshd.settled() - sshd_before))

    def close(self) -> None:
        self.client.close()


@dataclass
class Fleet:
    servers: list[SshServer]
    workdir: Path
    sshd: CpuGroup  # every listener of ``servers`` joined it when it started

    def meters(self, tool: str) -> Meters:
        return Meters(self.sshd, CpuGroup(tool))

    def host(self, i: int) -> tuple[str, SshServer]:
        return f"h{i:04d}", self.servers[i % len(self.servers)]

    def ansible_inventory(self, size: int) -> Path:
        control = self.workdir / "cp"
        control.mkdir(exist_ok=True)
        lines = ["[fleet]"]
        for i in range(size):
            name, s = self.host(i)
            lines.append(
                f"{name} ansible_host=127.0.0.1 ansible_port={s.port} ansible_user={s.user} "
                f"ansible_ssh_private_key_file={s.client_keys['ed25519']} "
                f"ansible_control_path={control}/{name}"
            )
        path = self.workdir / f"inventory-{size}.ini"
        path.write_text("\n".join(lines) + "\n")
        return path

    def known_hosts(self) -> Path:
        path = self.workdir / "known_hosts"
        path.write_text(
            "".join(
                f"[127.0.0.1]:{s.port} {key.get_name()} {key.get_base64()}\n"
                for s, key in ((s, s.host_key("ed25519")) for s in self.servers)
            )
        )
        return path


def register(deployment: Deployment, fleet: Fleet, size: int) -> None:
    spec = {
        "servers": [
            {
                "port": s.port,
                "user": s.user,
                "key": s.private_key_text("ed25519"),
                "host_keys": [[s.host_key("ed25519").get_name(), s.host_key("ed25519").get_base64()]],
            }
            for s in fleet.servers
        ],
        "hosts": [
            {"name": fleet.host(i)[0], "server": fleet.servers.index(fleet.host(i)[1])} for i in range(size)
        ],
    }
    subprocess.run(
        [sys.executable, "-m", "sshcontrol", "shell", "-c", SETUP_HOSTS],
        env=deployment.env,
        input=json.dumps(spec),
        text=True,
        check=True,
        capture_output=True,
    )


def bench_sshcontrol(fleet: Fleet, size: int, warm_runs: int, upload: Path | None = None) -> Runs:
    """ssh_execute_many (or ssh_upload_many) through one embedded mcp_serve; its CPU is the client's."""
    from mcp import Client

    server = fleet.servers[0]
    deployment = Deployment(server)
    deployment.cli("migrate", "--verbosity", "0")
    register(deployment, fleet, size)
    names = [fleet.host(i)[0] for i in range(size)]
    tool = "ssh_execute_many"
    arguments: dict[str, Any] = {"hosts": names, "max_parallel": PARALLEL, "response_format": "json"}
    if upload is None:
        arguments["command"] = "true"
    else:
        transfers = deployment.workdir / "data" / "transfers"
        transfers.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(upload, transfers / upload.name)
        tool = "ssh_upload_many"
        arguments |= {"local_path": upload.name, "remote_path": UPLOAD_NAME, "overwrite": True}

    meters = fleet.meters("sshcontrol")

    async def main() -> Runs:
        async with Client(deployment.server_params()) as client:
            await client.call_tool("ssh_list_hosts", {"search": "nothing-matches"})  # the server is up
            # The client's CPU is mcp_serve's (all its threads; this process only reads the replies).
            [pid] = children_named("mcp_serve")
            meters.client.add(pid)
            runs: list[Run] = []
            for _ in range(1 + warm_runs):
                with meters.run(runs):
                    result = await client.call_tool(tool, arguments)
                summary = (result.structured_content or {}).get("summary", {})
                if result.is_error or summary.get("ok") != size:
                    raise RuntimeError(f"{tool} did not succeed everywhere: {summary or result}")
            return Runs(runs[0], runs[1:])

    try:
        return asyncio.run(main())
    finally:
        meters.close()
        deployment.close()
        shutil.rmtree(deployment.workdir, ignore_errors=True)


def bench_ansible(fleet: Fleet, size: int, refs: Path, warm_runs: int, upload: Path | None = None) -> Runs:
    inventory = fleet.ansible_inventory(size)
    known = fleet.known_hosts()
    home = fleet.workdir / "ansible-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{refs / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": (
            f"-o ControlMaster=auto -o ControlPersist=600s -o UserKnownHostsFile={known} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes"
        ),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }
    module = (
        ["-m", "raw", "-a", "true"]
        if upload is None
        else ["-m", "copy", "-a", f"src={upload} dest={UPLOAD_NAME}"]
    )
    command = [str(refs / "bin" / "ansible"), "all", "-i", str(inventory), *module]
    command += ["-f", str(PARALLEL)]
    # The client's CPU: ansible, its forks, the ssh clients and the ControlMasters they leave.
    meters = fleet.meters("ansible")
    command = meters.client.wrap(command)
    runs: list[Run] = []
    try:
        for _ in range(1 + warm_runs):
            with meters.run(runs):
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"ansible failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}"
                )
    finally:
        stop_masters(fleet, size)
        meters.close()
    return Runs(runs[0], runs[1:])


def stop_masters(fleet: Fleet, size: int) -> None:
    """End the ControlMasters the Ansible runs left (ssh -O exit on each one's socket)."""

    def stop(i: int) -> None:
        name, s = fleet.host(i)
        path = fleet.workdir / "cp" / name
        if path.exists():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={path}", "-O", "exit", "-p", str(s.port), f"{s.user}@127.0.0.1"],
                capture_output=True,
                check=False,
            )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(stop, range(size)))


def bench_pssh(fleet: Fleet, size: int, refs: Path, warm_runs: int, upload: Path | None = None) -> Runs:
    spec = {
        "parallel": PARALLEL,
        "local": str(upload),
        "remote": UPLOAD_NAME,
        "hosts": [
            {"port": s.port, "user": s.user, "key_file": str(s.client_keys["ed25519"])}
            for s in (fleet.host(i)[1] for i in range(size))
        ],
    }
    argv = [str(refs / "bin" / "python"), "-c", PSSH if upload is None else PSSH_COPY]
    return drive_reference(fleet.meters("pssh"), argv, spec, size, warm_runs, "parallel-ssh")


def bench_c_client(fleet: Fleet, size: int, refs: Path, warm_runs: int, library: str, wire: bool) -> Runs:
    """``bench/refs/<library>_fanout.py``: one thread, non-blocking sessions on one epoll loop.

    ``wire``: send what sshcontrol sends for ``true`` (``sshlib.execute.remote_command``, which
    prints the shell's process group first; stdout is checked for it), else plain ``true``.
    """
    from sshlib.capture import PGID_MARKER
    from sshlib.execute import ExecRequest, remote_command

    spec = {
        "parallel": PARALLEL,
        "command": remote_command(ExecRequest(command="true")) if wire else "true",
        "expect": PGID_MARKER.decode() if wire else None,
        "hosts": [
            {
                "port": s.port,
                "user": s.user,
                "key": s.private_key_text("ed25519"),
                "host_key": s.host_key("ed25519").get_base64(),
            }
            for s in (fleet.host(i)[1] for i in range(size))
        ],
    }
    argv = [str(refs / "bin" / "python"), str(REFS_SCRIPTS / f"{library}_fanout.py")]
    return drive_reference(fleet.meters(library), argv, spec, size, warm_runs, library)


def drive_reference(
    meters: Meters, argv: list[str], spec: dict[str, Any], size: int, warm_runs: int, label: str
) -> Runs:
    """Start a reference script in ``meters``' client group; one cold run, then ``warm_runs``."""
    proc = subprocess.Popen(
        meters.client.wrap(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    meters.client.roots.append(proc.pid)  # counted by its process tree where no cgroup is available
    assert proc.stdin is not None and proc.stdout is not None
    runs: list[Run] = []
    try:
        proc.stdin.write(json.dumps(spec) + "\n")
        for _ in range(1 + warm_runs):
            measured: list[Run] = []
            with meters.run(measured):
                proc.stdin.write("go\n")
                proc.stdin.flush()
                answer = proc.stdout.readline()
            if not answer:
                raise RuntimeError(f"{label} stopped (exit status {proc.wait()})")
            wall, failed, *loop = json.loads(answer)
            if loop and loop[0]:  # the C-library loops: idle nudges and lost wake-ups (fanout_loop)
                print(f"{label} run {len(runs)}: {loop[0]} idle nudges, {loop[1]} hosts revived", flush=True)
            if failed:
                raise RuntimeError(f"{label}: {failed} of {size} hosts failed")
            # The wall time is the script's own timing of the run, not the pipe's round trip.
            runs.append(replace(measured[0], wall=wall))
    finally:
        proc.stdin.close()
        proc.wait(60)
        meters.close()
    return Runs(runs[0], runs[1:])


def load() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def bench_paramiko(fleet: Fleet, size: int, warm_runs: int) -> Runs:
    """The floor of a paramiko client: plain connections in this process, ``true`` from PARALLEL threads.

    No database, no MCP, no audit: sshlib's ``run_command`` on each host's own connection, the
    connections opened as sshcontrol opens them (aes128-gcm first, the pinned host key). The
    client's CPU is this process's (nothing else runs in it meanwhile).
    """
    from common import raw_client

    from sshlib.execute import ExecRequest, run_command

    meters = Meters(fleet.sshd, CpuGroup("paramiko"))
    meters.client.add(os.getpid())
    request = ExecRequest(command="true")
    clients: list[Any] = []
    runs: list[Run] = []

    def run_on(client: Any) -> None:
        if run_command(client, request).exit_status != 0:
            raise RuntimeError("true failed")

    try:
        with ThreadPoolExecutor(PARALLEL) as pool, meters.run(runs):
            clients += pool.map(
                lambda i: raw_client(fleet.host(i)[1], ciphers=("aes128-gcm@openssh.com",)), range(size)
            )
            list(pool.map(run_on, clients))  # the cold run: connect, then the first command
        with ThreadPoolExecutor(PARALLEL) as pool:
            for _ in range(warm_runs):
                with meters.run(runs):
                    list(pool.map(run_on, clients))
    finally:
        for client in clients:
            client.close()
        meters.client.close()  # moves this process back to the root group
    return Runs(runs[0], runs[1:])


TOOLS = {
    "sshcontrol": "sshcontrol",
    "pssh": "parallel-ssh",
    "ansible": "Ansible",
    "paramiko": "paramiko alone",
    "libssh2": "libssh2, true",
    "libssh2_wire": "libssh2, wire form",
    "libssh": "libssh, true",
    "libssh_wire": "libssh, wire form",
}


def describe(run: Run) -> str:
    return (
        f"{run.wall:.2f} s (CPU: client {run.client_cpu:.2f} s, sshd {run.sshd_cpu:.2f} s, "
        f"floor {run.floor:.2f} s)"
    )


def print_tables(rows: list[dict[str, Any]]) -> None:
    """The times and ratios (the targets' table), then where each run's CPU went and its floor."""
    print(
        "| hosts | sshcontrol cold | warm | parallel-ssh cold | warm | Ansible cold | warm | "
        "Ansible/sshcontrol cold | warm | parallel-ssh/sshcontrol cold | warm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ours: Runs = row["sshcontrol"]
        cells = [str(row["size"]), f"{ours.cold.wall:.2f} s", f"{ours.warm.wall:.2f} s"]
        for name in ("pssh", "ansible"):
            ref = row.get(name)
            cells += [f"{ref.cold.wall:.2f} s", f"{ref.warm.wall:.2f} s"] if ref else ["-", "-"]
        for name in ("ansible", "pssh"):
            ref = row.get(name)
            cells += (
                [f"{ref.cold.wall / ours.cold.wall:.1f}x", f"{ref.warm.wall / ours.warm.wall:.1f}x"]
                if ref
                else ["-", "-"]
            )
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nCPU seconds per run: the tool's own processes (client) and every sshd with what it forked;"
        f"\nfloor = (client + sshd) / {CORES} cores, the least wall time that CPU allows on this machine;"
        f"\nsshd / {CORES} is the floor of any client that cost nothing.\n"
    )
    print("| hosts | tool | run | wall | client CPU | sshd CPU | floor | sshd / cores |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for name, label in TOOLS.items():
            runs: Runs | None = row.get(name)
            if runs is None:
                continue
            for kind, run in (("cold", runs.cold), ("warm", runs.warm)):
                print(
                    f"| {row['size']} | {label} | {kind} | {run.wall:.2f} s | {run.client_cpu:.2f} s | "
                    f"{run.sshd_cpu:.2f} s | {run.floor:.2f} s | {run.sshd_cpu / CORES:.2f} s |"
                )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--servers", type=int, default=4, help="loopback sshd instances")
    parser.add_argument(
        "--refs", default=str(REPO / ".venv-refs"), help="venv with ansible-core, parallel-ssh"
    )
    parser.add_argument("--skip-refs", action="store_true", help="only sshcontrol")
    parser.add_argument("--skip-ansible", action="store_true", help="no Ansible row (~30 s per size)")
    parser.add_argument(
        "--paramiko",
        action="store_true",
        help="also plain paramiko connections in this process (the floor of a paramiko client)",
    )
    parser.add_argument(
        "--libssh2",
        action="store_true",
        help="also libssh2 (ssh2-python in --refs) from one thread, plain `true` and our wire form",
    )
    parser.add_argument(
        "--libssh", action="store_true", help="also libssh (ssh-python in --refs), the same two rows"
    )
    parser.add_argument(
        "--warm-runs", type=int, default=1, help="warm runs per tool after the cold one (the median is shown)"
    )
    parser.add_argument(
        "--upload", action="store_true", help=f"upload {UPLOAD_BYTES >> 20} MiB instead of `true`"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    refs = Path(args.refs)
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-fanout-"))
    servers = [SshServer.create().start() for _ in range(args.servers)]
    sshd = CpuGroup("sshd")
    for server in servers:
        assert server.proc is not None
        sshd.add(server.proc.pid)
    fleet = Fleet(servers, workdir, sshd)
    upload: Path | None = None
    if args.upload:
        upload = workdir / "fanout-source.bin"
        upload.write_bytes(os.urandom(UPLOAD_BYTES))
        upload.chmod(0o644)
    rows: list[dict[str, Any]] = []
    try:
        print(f"start: {load()}", flush=True)
        for size in sizes:
            row: dict[str, Any] = {"size": size}
            row["sshcontrol"] = bench_sshcontrol(fleet, size, args.warm_runs, upload)
            if not args.skip_refs:
                row["pssh"] = bench_pssh(fleet, size, refs, args.warm_runs, upload)
                if not args.skip_ansible:
                    row["ansible"] = bench_ansible(fleet, size, refs, args.warm_runs, upload)
            if args.paramiko and upload is None:
                row["paramiko"] = bench_paramiko(fleet, size, args.warm_runs)
            for library in ("libssh2", "libssh"):
                if getattr(args, library) and upload is None:
                    for wire in (False, True):
                        row[library + ("_wire" if wire else "")] = bench_c_client(
                            fleet, size, refs, args.warm_runs, library, wire
                        )
            for name, label in TOOLS.items():
                runs: Runs | None = row.get(name)
                if runs is not None:
                    warm = "; ".join(describe(run) for run in runs.warm_runs)
                    print(f"{size} hosts {label} cold {describe(runs.cold)}; warm {warm}", flush=True)
            rows.append(row)
        print(f"end: {load()}\n")
        if not sshd.exact:
            print("(no cgroup v2 to count in: CPU from /proc/PID/stat, 10 ms ticks per process, inexact)\n")
        print_tables(rows)
    finally:
        for server in servers:
            server.remove()
        sshd.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
