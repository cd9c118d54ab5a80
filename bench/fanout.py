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

The references live in their own virtual environment (``ansible-core`` and ``parallel-ssh``
from PyPI), so they never touch the project's dependencies:

    python3 -m venv .venv-refs && .venv-refs/bin/pip install ansible-core parallel-ssh
    sudo .venv/bin/python bench/fanout.py [--sizes 50,200,1000] [--servers 4] [--refs .venv-refs]
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Deployment

from tests.sshd import SshServer

PARALLEL = 50
UPLOAD_BYTES = 10 * 1024 * 1024
UPLOAD_NAME = "fanout-upload.bin"

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

PSSH = """
import json, sys, time
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
spec = json.loads(sys.stdin.read())
hosts = ["127.0.0.1"] * len(spec["hosts"])
config = [HostConfig(port=h["port"], user=h["user"], private_key=h["key_file"]) for h in spec["hosts"]]
client = ParallelSSHClient(hosts, host_config=config, pool_size=spec["parallel"], timeout=60)
times = []
for _ in range(2):
    started = time.perf_counter()
    output = client.run_command("true", stop_on_errors=False)
    client.join(output)
    failed = sum(1 for o in output if o.exception is not None or o.exit_code != 0)
    times.append((time.perf_counter() - started, failed))
print(json.dumps(times))
"""


PSSH_COPY = """
import json, sys, time
import gevent
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
spec = json.loads(sys.stdin.read())
hosts = ["127.0.0.1"] * len(spec["hosts"])
config = [HostConfig(port=h["port"], user=h["user"], private_key=h["key_file"]) for h in spec["hosts"]]
client = ParallelSSHClient(hosts, host_config=config, pool_size=spec["parallel"], timeout=120)
times = []
for _ in range(2):
    started = time.perf_counter()
    greenlets = client.copy_file(spec["local"], spec["remote"])
    gevent.joinall(greenlets, raise_error=False)
    failed = sum(1 for g in greenlets if g.exception is not None)
    times.append((time.perf_counter() - started, failed))
print(json.dumps(times))
"""


@dataclass
class Fleet:
    servers: list[SshServer]
    workdir: Path

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


def bench_sshcontrol(fleet: Fleet, size: int, upload: Path | None = None) -> tuple[float, float]:
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

    async def main() -> tuple[float, float]:
        async with Client(deployment.server_params()) as client:
            await client.call_tool("ssh_list_hosts", {"search": "nothing-matches"})  # the server is up
            times = []
            for _ in range(2):
                started = time.perf_counter()
                result = await client.call_tool(tool, arguments)
                times.append(time.perf_counter() - started)
                summary = (result.structured_content or {}).get("summary", {})
                if result.is_error or summary.get("ok") != size:
                    raise RuntimeError(f"{tool} did not succeed everywhere: {summary or result}")
            return times[0], times[1]

    try:
        return asyncio.run(main())
    finally:
        deployment.close()
        shutil.rmtree(deployment.workdir, ignore_errors=True)


def bench_ansible(fleet: Fleet, size: int, refs: Path, upload: Path | None = None) -> tuple[float, float]:
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
    times = []
    try:
        for _ in range(2):
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(
                    f"ansible failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}"
                )
    finally:
        stop_masters(fleet, size)
    return times[0], times[1]


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


def bench_pssh(fleet: Fleet, size: int, refs: Path, upload: Path | None = None) -> tuple[float, float]:
    spec = {
        "parallel": PARALLEL,
        "local": str(upload),
        "remote": UPLOAD_NAME,
        "hosts": [
            {"port": s.port, "user": s.user, "key_file": str(s.client_keys["ed25519"])}
            for s in (fleet.host(i)[1] for i in range(size))
        ],
    }
    done = subprocess.run(
        [str(refs / "bin" / "python"), "-c", PSSH if upload is None else PSSH_COPY],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    (cold, cold_failed), (warm, warm_failed) = json.loads(done.stdout.strip().splitlines()[-1])
    if cold_failed or warm_failed:
        raise RuntimeError(f"parallel-ssh: {cold_failed} / {warm_failed} hosts failed")
    return cold, warm


def load() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--servers", type=int, default=4, help="loopback sshd instances")
    parser.add_argument(
        "--refs", default=str(REPO / ".venv-refs"), help="venv with ansible-core, parallel-ssh"
    )
    parser.add_argument("--skip-refs", action="store_true", help="only sshcontrol")
    parser.add_argument(
        "--upload", action="store_true", help=f"upload {UPLOAD_BYTES >> 20} MiB instead of `true`"
    )
    args = parser.parse_args()
    refs = Path(args.refs)
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-fanout-"))
    servers = [SshServer.create().start() for _ in range(args.servers)]
    fleet = Fleet(servers, workdir)
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
            row["sshcontrol"] = bench_sshcontrol(fleet, size, upload)
            print(
                f"{size} hosts sshcontrol cold {row['sshcontrol'][0]:.2f} s "
                f"warm {row['sshcontrol'][1]:.2f} s",
                flush=True,
            )
            if not args.skip_refs:
                row["pssh"] = bench_pssh(fleet, size, refs, upload)
                print(
                    f"{size} hosts parallel-ssh cold {row['pssh'][0]:.2f} s warm {row['pssh'][1]:.2f} s",
                    flush=True,
                )
                row["ansible"] = bench_ansible(fleet, size, refs, upload)
                print(
                    f"{size} hosts ansible cold {row['ansible'][0]:.2f} s warm {row['ansible'][1]:.2f} s",
                    flush=True,
                )
            rows.append(row)
        print(f"end: {load()}\n")
        print(
            "| hosts | sshcontrol cold | warm | parallel-ssh cold | warm | Ansible cold | warm | "
            "Ansible/sshcontrol cold | warm | parallel-ssh/sshcontrol cold | warm |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            ours = row["sshcontrol"]
            cells = [str(row["size"]), f"{ours[0]:.2f} s", f"{ours[1]:.2f} s"]
            for name in ("pssh", "ansible"):
                ref = row.get(name)
                cells += [f"{ref[0]:.2f} s", f"{ref[1]:.2f} s"] if ref else ["-", "-"]
            for name in ("ansible", "pssh"):
                ref = row.get(name)
                cells += [f"{ref[0] / ours[0]:.1f}x", f"{ref[1] / ours[1]:.1f}x"] if ref else ["-", "-"]
            print("| " + " | ".join(cells) + " |")
    finally:
        for server in servers:
            server.remove()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
