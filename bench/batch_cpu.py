"""CPU of a batch's own bookkeeping, without SSH: what ``ssh_execute_many`` costs beside paramiko.

Two measurements in a fresh data directory (SQLite), each the median CPU time of this tree's
code in one process (no MCP, no SSH threads, so other load on the machine barely moves them):

- ``finish_many`` of 200 audit rows, 25 per call as a batch flushes them;
- ``fleet.run_batch`` over 200 registered hosts with an operation that returns at once with
  what a warm ``true`` reports: host selection, grants, the rows opened in bulk, the pool
  threads' hand-offs, the rows completed and chained.

Run it on two trees in turn to compare them (the second tree's code is used when this file is
copied there, or with ``--repo``):

    .venv/bin/python bench/batch_cpu.py [--repo /path/to/other/tree] [--hosts 200] [--rounds 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]

MEASURE = """
import statistics, time
from dataclasses import dataclass
from audit import writer
from audit.writer import Completion
from hosts.access import Permission
from hosts.clients import local_client
from hosts.models import Host
from sshcontrol import fleet
from sshcontrol.caller import Caller
from sshcontrol.hostcall import AuditFields
from sshcontrol.taskspec import CommandSpec
from sshlib.execute import ExecResult

HOSTS, ROUNDS = {hosts}, {rounds}
SPEC = CommandSpec(command="true")
RUN = ExecResult(0, None, "", "", 0, 0, False, False, False, False, 3.0)


@dataclass(frozen=True)
class Returns:
    tool: str = "ssh_execute_many"
    permission: Permission = Permission.EXECUTE
    sudo: bool = False

    def audit(self, batch_id):
        return AuditFields.of(SPEC, batch_id)

    def details(self):
        return {{}}

    def run(self, call, call_id):
        done = Completion.of_command(RUN, status="ok", session_id=call.host.name + "-0123456789ab")
        return fleet.HostResult(call.host.name, "ok", call.event_id, RUN, "", "s"), done


def median_ms(samples):
    return statistics.median(samples[2:]) * 1000  # the first two warm caches up


finishing = []
for _ in range(ROUNDS):
    rows = [dict(tool="ssh_execute_many", actor="bench", transport="stdio", command="true", batch_id="b")
            for _ in range(HOSTS)]
    ids = writer.begin_many(rows)
    ok = Completion("ok", "s-0123456789ab", exit_status=0, stdout_bytes=0, stderr_bytes=0)
    done = [(i, ok) for i in ids]
    started = time.process_time()
    for start in range(0, HOSTS, 25):
        writer.finish_many(done[start : start + 25])
    finishing.append(time.process_time() - started)

client = local_client("bench")
Host.objects.bulk_create(
    [Host(name=f"h{{i:04d}}", address="127.0.0.1", port=22, username="x") for i in range(HOSTS)]
)
caller = Caller(actor="bench (batch_cpu)", transport="stdio", client_id=client.pk, client_name=client.name)
names = [f"h{{i:04d}}" for i in range(HOSTS)]
batches = []
for _ in range(ROUNDS):
    started = time.process_time()
    outcome = fleet.run_batch(caller, Returns(), hosts=names)
    batches.append(time.process_time() - started)
    assert fleet.summary(outcome.results)["ok"] == HOSTS
print(f"finish_many of {{HOSTS}} rows (25 a call): {{median_ms(finishing):.1f}} ms CPU")
print(f"run_batch bookkeeping, {{HOSTS}} hosts: {{median_ms(batches):.1f}} ms CPU")
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", default=str(REPO), help="the tree whose code is measured")
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-batchcpu-"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(repo),
        "SSHCONTROL_DATA_DIR": str(workdir / "data"),
        "SSHCONTROL_FIELD_KEYS": Fernet.generate_key().decode(),
        "SSHCONTROL_LOG_LEVEL": "WARNING",
    }
    try:
        for command in (
            ["migrate", "--verbosity", "0"],
            ["shell", "--no-imports", "-c", MEASURE.format(hosts=args.hosts, rounds=args.rounds)],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "sshcontrol", *command],
                env=env,
                cwd=repo,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
        print(f"{repo} (load average {os.getloadavg()[0]:.1f})")
        print(done.stdout, end="")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
