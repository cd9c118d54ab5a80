"""The local file fence holds where the file is opened, while links are swapped.

In distributed mode that is the mcp_serve that received the call (the workers of the pool have a
transfer directory of their own, as on other machines): the bytes stream to and from the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters

from sshcontrol.localfiles import local_root
from tests.distributed.conftest import REPO, WorkerPool, service_env
from tests.fence_race import BENIGN, FenceRace
from tests.sshd import SshServer

RACE_SECONDS = 6.0


def test_it_never_reads_or_writes_outside_the_root_on_a_worker(
    workers: WorkerPool, make_host, sshd: SshServer, tmp_path: Path
) -> None:
    make_host("h")
    race = FenceRace.create(local_root(), tmp_path / "outside")
    remote = f"/tmp/sshc-dfence-{sshd.user}"
    benign = hashlib.sha256(BENIGN).hexdigest()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sshcontrol", "mcp_serve"],
        env=service_env(workers.broker_url),
        cwd=str(REPO),
    )

    async def body() -> dict[str, list[bool]]:
        outcomes: dict[str, list[bool]] = {"up": [], "file": [], "down": []}
        async with Client(params) as client:
            setup = await client.call_tool(
                "ssh_execute",
                {
                    "host": "h",
                    "command": f"rm -rf {remote} && mkdir -p {remote} && echo remote > {remote}/src",
                },
            )
            assert not setup.is_error, setup.content
            swapper = race.start(RACE_SECONDS)
            n = 0
            while swapper.poll() is None:
                n += 1
                for kind, tool, args in (
                    (
                        "up",
                        "ssh_upload_file",
                        {"remote_path": f"{remote}/up", "local_path": "race/up/payload.txt"},
                    ),
                    ("file", "ssh_upload_file", {"remote_path": f"{remote}/f", "local_path": "race/f.txt"}),
                    (
                        "down",
                        "ssh_download_file",
                        {"remote_path": f"{remote}/src", "local_path": f"race/down/d{n % 5}"},
                    ),
                ):
                    result = await client.call_tool(tool, {"host": "h", "overwrite": True, **args})
                    outcomes[kind].append(not result.is_error)
                    if kind != "down" and not result.is_error:
                        assert result.structured_content is not None
                        assert result.structured_content["sha256"] == benign, (
                            "a file outside the root was sent"
                        )
            assert race.finish(swapper) > 50
            secret = race.secret.decode().strip()
            grep = await client.call_tool(
                "ssh_execute", {"host": "h", "command": f"grep -rl {secret} {remote} || true"}
            )
            assert grep.structured_content is not None and grep.structured_content["stdout"] == ""
        return outcomes

    try:
        outcomes = asyncio.run(body())
    finally:
        shutil.rmtree(race.race, ignore_errors=True)
    assert race.written_outside() == [], "a download wrote outside the root"
    for kind, results in outcomes.items():
        assert any(results) and not all(results), (kind, sum(results), len(results))


def test_it_runs_workers_with_an_owner_only_umask(workers: WorkerPool) -> None:
    """Whatever a worker writes (SQLite's files, downloads) is created owner-only."""
    for name, proc in workers.procs.items():
        status = Path(f"/proc/{proc.pid}/status").read_text()
        umask = next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))
        assert int(umask, 8) & 0o077 == 0o077, (name, umask)
