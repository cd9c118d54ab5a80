"""The local file fence under attack through the MCP tools: links swapped while calls run, FIFOs."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.types import CallToolResult

from sshcontrol.localfiles import local_root
from tests.fence_race import BENIGN, FenceRace
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

RACE_SECONDS = 10.0


@pytest.fixture
def fence_race(tmp_path: Path) -> Iterator[FenceRace]:
    race = FenceRace.create(local_root(), tmp_path / "outside")
    yield race
    shutil.rmtree(race.race, ignore_errors=True)


def test_it_never_reads_or_writes_outside_the_root_while_links_are_swapped(
    mcp: McpHarness, make_host, sshd: SshServer, fence_race: FenceRace
) -> None:
    make_host("h")
    remote = f"/tmp/sshc-fence-{sshd.user}"
    mcp.ok(
        "ssh_execute", host="h", command=f"rm -rf {remote} && mkdir -p {remote} && echo remote > {remote}/src"
    )
    benign = hashlib.sha256(BENIGN).hexdigest()
    outcomes: dict[str, list[bool]] = {"up": [], "file": [], "down": []}
    swapper = fence_race.start(RACE_SECONDS)
    n = 0
    while swapper.poll() is None:
        n += 1
        calls: dict[str, CallToolResult] = {
            "up": mcp.call(
                "ssh_upload_file",
                host="h",
                remote_path=f"{remote}/up",
                local_path="race/up/payload.txt",
                overwrite=True,
            ),
            "file": mcp.call(
                "ssh_upload_file",
                host="h",
                remote_path=f"{remote}/f",
                local_path="race/f.txt",
                overwrite=True,
            ),
            "down": mcp.call(
                "ssh_download_file",
                host="h",
                remote_path=f"{remote}/src",
                local_path=f"race/down/d{n % 5}",
                overwrite=True,
            ),
        }
        for kind, result in calls.items():
            outcomes[kind].append(not result.is_error)
            if kind != "down" and not result.is_error:
                assert result.structured_content is not None
                assert result.structured_content["sha256"] == benign, "a file outside the root was sent"
    rounds = fence_race.finish(swapper)
    secret = fence_race.secret.decode().strip()
    leaked = mcp.ok("ssh_execute", host="h", command=f"grep -rl {secret} {remote} || true")["stdout"]
    assert leaked == "", f"the secret outside the root reached the host: {leaked}"
    assert fence_race.written_outside() == [], "a download wrote outside the root"
    # The race ran: the swapper made many rounds, and calls both got through and were refused.
    assert rounds > 100 and n > 20
    for kind, results in outcomes.items():
        assert any(results) and not all(results), (kind, sum(results), len(results))


def test_it_refuses_links_and_special_files_and_writes_private_files(
    mcp: McpHarness, make_host, sshd: SshServer, tmp_path: Path
) -> None:
    make_host("h")
    root = local_root()
    remote = f"/tmp/sshc-fence2-{sshd.user}"
    mcp.ok(
        "ssh_execute", host="h", command=f"rm -rf {remote} && mkdir -p {remote} && echo remote > {remote}/src"
    )
    (root / "real.txt").write_bytes(b"inside\n")
    (root / "alias.txt").unlink(missing_ok=True)
    (root / "alias.txt").symlink_to(root / "real.txt")  # a link, even to a file inside, is refused
    message = mcp.error("ssh_upload_file", host="h", remote_path=f"{remote}/x", local_path="alias.txt")
    assert "symbolic link" in message
    fifo = root / "pipe"
    if not fifo.exists():
        os.mkfifo(fifo)
    started = time.monotonic()
    assert "not a regular file" in mcp.error(
        "ssh_upload_file", host="h", remote_path=f"{remote}/x", local_path="pipe"
    )
    assert time.monotonic() - started < 10, "opening a FIFO blocked"
    assert "not a regular file" in mcp.error(
        "ssh_download_file", host="h", remote_path=f"{remote}/src", local_path="pipe", overwrite=True
    )
    old = os.umask(0o022)  # a permissive umask: the file is private all the same
    try:
        down = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote}/src", local_path="private.txt")
    finally:
        os.umask(old)
    assert down["local_path"] == str(root / "private.txt")
    assert stat.S_IMODE((root / "private.txt").stat().st_mode) == 0o600
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []
    for name in ("alias.txt", "pipe", "real.txt", "private.txt"):
        (root / name).unlink()
