"""ssh_upload_many and ssh_download_many end to end: many Host rows on the suite's real sshd.

Every host here is the same sshd and user, so every host's remote path is one file: uploads
overwrite (each host's copy is still checked), and downloads land in per-host local files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from hosts.models import Host
from sshcontrol.localfiles import local_root
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer


def hosts(make_host: Callable[..., Any], count: int, prefix: str = "node") -> list[Host]:
    return [make_host(f"{prefix}{i:02d}") for i in range(count)]


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["host"]: r["status"] for r in result["results"]}


@pytest.fixture
def remote_dir(mcp: McpHarness, make_host, sshd: SshServer) -> str:
    make_host("setup")
    path = f"/tmp/sshc-many-{sshd.user}"
    mcp.ok("ssh_execute", host="setup", command=f"rm -rf {path} && mkdir -p {path}")
    return path


def test_it_uploads_one_file_to_every_host_with_its_hash_checked(
    mcp: McpHarness, make_host, remote_dir: str
) -> None:
    made = hosts(make_host, 3)
    names = [h.name for h in made]
    payload = os.urandom(200_000)
    (local_root() / "fleet.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    target = f"{remote_dir}/fleet.bin"
    result = mcp.ok(
        "ssh_upload_many",
        hosts=names,
        remote_path=target,
        local_path="fleet.bin",
        overwrite=True,
        file_mode="0640",
    )
    assert result["summary"]["ok"] == 3 and result["summary"]["total"] == 3
    assert result["sha256"] == digest and result["bytes"] == len(payload)
    assert result["source"] == str(local_root() / "fleet.bin")
    assert [r["host"] for r in result["results"]] == names
    assert all(r["sha256"] == digest and r["bytes"] == len(payload) for r in result["results"])
    # What each host holds, read back by a command on each.
    check = mcp.ok("ssh_execute_many", hosts=names, command=f"sha256sum {target}; stat -c %a {target}")
    assert {r["stdout"] for r in check["results"]} == {f"{digest}  {target}\n640\n"}
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert rows.count() == 3
    assert all(
        r.tool == "ssh_upload_many"
        and r.status == AuditEvent.Status.OK
        and r.file_sha256 == digest
        and r.file_size == len(payload)
        and r.remote_path == target
        for r in rows
    )
    assert {r["audit_id"] for r in result["results"]} == set(rows.values_list("id", flat=True))
    text = mcp.text("ssh_upload_many", hosts=names, remote_path=target, content="hi\n", overwrite=True)
    assert "3 ok" in text and "node00, node01, node02" in text


def test_an_existing_remote_file_is_kept_unless_overwrite(
    mcp: McpHarness, make_host, remote_dir: str
) -> None:
    made = hosts(make_host, 2)
    names = [h.name for h in made]
    target = f"{remote_dir}/kept"
    mcp.ok("ssh_upload_file", host=names[0], remote_path=target, content="first")
    result = mcp.ok("ssh_upload_many", hosts=names, remote_path=target, content="second")
    assert set(statuses(result).values()) == {"error"}
    assert all("overwrite" in r["error"] for r in result["results"])
    assert mcp.ok("ssh_download_file", host=names[0], remote_path=target)["content"] == "first"


def test_a_host_the_client_may_not_write_to_is_refused_in_the_middle(
    as_client, make_host, sshd: SshServer
) -> None:
    a, c = make_host("a"), make_host("c")
    make_host("b")
    agent = as_client("agent", hosts=[a, c], can_write_files=True, can_list=True)
    target = f"/tmp/sshc-many-refused-{sshd.user}"
    result = agent.ok(
        "ssh_upload_many", hosts=["a", "b", "c"], remote_path=target, content="x", overwrite=True
    )
    assert statuses(result) == {"a": "ok", "b": "refused", "c": "ok"}
    row = AuditEvent.objects.get(batch_id=result["batch_id"], host_name="b")
    assert row.status == AuditEvent.Status.DENIED and row.tool == "ssh_upload_many"
    # A client that may only read is refused a write on every host it may read.
    reader = as_client("reader", hosts=[a], can_list=True, can_execute=True, can_write_files=False)
    assert "ssh_upload_many" in reader.error("ssh_upload_many", hosts=["a"], remote_path=target, content="x")


def test_it_downloads_from_every_host_into_per_host_files(
    mcp: McpHarness, make_host, remote_dir: str
) -> None:
    made = hosts(make_host, 3)
    names = [h.name for h in made]
    payload = os.urandom(100_000)
    source = local_root() / "seed.bin"
    source.write_bytes(payload)
    target = f"{remote_dir}/data.bin"
    mcp.ok("ssh_upload_file", host=names[0], remote_path=target, local_path="seed.bin")
    digest = hashlib.sha256(payload).hexdigest()
    result = mcp.ok("ssh_download_many", hosts=names, remote_path=target, local_dir="collected")
    assert result["summary"]["ok"] == 3
    assert result["local_dir"] == str(local_root() / "collected")
    for r in result["results"]:
        path = local_root() / "collected" / r["host"] / "data.bin"
        assert r["local_path"] == str(path) and r["sha256"] == digest and r["bytes"] == len(payload)
        assert path.read_bytes() == payload
        assert (path.stat().st_mode & 0o777) == 0o600
    [group] = result["groups"]
    assert group["hosts"] == names and group["sha256"] == digest
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert {(r.tool, r.status, r.file_sha256) for r in rows} == {("ssh_download_many", "ok", digest)}
    assert rows.count() == 3
    # Existing local files are kept unless overwrite is asked.
    again = mcp.ok("ssh_download_many", hosts=names, remote_path=target, local_dir="collected")
    assert set(statuses(again).values()) == {"error"}
    assert all("already exists" in r["error"] for r in again["results"])
    replaced = mcp.ok(
        "ssh_download_many", hosts=names, remote_path=target, local_dir="collected", overwrite=True
    )
    assert replaced["summary"]["ok"] == 3
    # A missing remote file is that host's error, not the batch's.
    missing = mcp.ok(
        "ssh_download_many", hosts=names[:1], remote_path=f"{remote_dir}/nope", local_dir="collected"
    )
    assert statuses(missing) == {names[0]: "error"}


def test_progress_reports_hosts_done_out_of_total(mcp: McpHarness, make_host, remote_dir: str) -> None:
    made = hosts(make_host, 2)
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    result = mcp.run(
        mcp.client.call_tool(
            "ssh_upload_many",
            {
                "hosts": [h.name for h in made],
                "remote_path": f"{remote_dir}/p",
                "content": "p",
                "overwrite": True,
            },
            progress_callback=on_progress,
        )
    )
    assert not result.is_error
    assert seen and seen[-1] == "2 of 2 hosts done"


def test_a_symbolic_link_in_the_transfer_directory_is_not_followed(
    mcp: McpHarness, make_host, remote_dir: str, tmp_path
) -> None:
    made = hosts(make_host, 1)
    mcp.ok("ssh_upload_file", host=made[0].name, remote_path=f"{remote_dir}/f", content="f")
    outside = tmp_path / "outside"
    outside.mkdir()
    root = local_root()
    (root / "dl").mkdir(exist_ok=True)
    link = root / "dl" / made[0].name
    link.symlink_to(outside)
    try:
        result = mcp.ok(
            "ssh_download_many", hosts=[made[0].name], remote_path=f"{remote_dir}/f", local_dir="dl"
        )
        assert statuses(result) == {made[0].name: "error"}
        assert "symbolic link" in result["results"][0]["error"]
        assert not list(outside.iterdir())
        (root / "dlink").symlink_to(outside)
        assert "symbolic link" in mcp.error(
            "ssh_download_many", hosts=[made[0].name], remote_path=f"{remote_dir}/f", local_dir="dlink"
        )
    finally:
        link.unlink()
        (root / "dlink").unlink(missing_ok=True)


def test_bad_input_is_refused_before_any_host(mcp: McpHarness, make_host, remote_dir: str) -> None:
    make_host("a")
    up = {"remote_path": f"{remote_dir}/x", "content": "x"}
    assert "exactly one of hosts or tag" in mcp.error("ssh_upload_many", **up)
    assert "exactly one of hosts or tag" in mcp.error("ssh_upload_many", hosts=["a"], tag="t", **up)
    assert "empty" in mcp.error("ssh_upload_many", hosts=[], **up)
    assert "exactly one of local_path or content" in mcp.error(
        "ssh_upload_many", hosts=["a"], remote_path=f"{remote_dir}/x", content="x", local_path="x"
    )
    for escape in ("../outside.txt", "/etc/passwd", "sub/../../outside.txt"):
        message = mcp.error("ssh_upload_many", hosts=["a"], remote_path=f"{remote_dir}/x", local_path=escape)
        assert "outside the transfer directory" in message
        assert "outside the transfer directory" in mcp.error(
            "ssh_download_many", hosts=["a"], remote_path="/etc/hostname", local_dir=escape
        )
    down = {"remote_path": "/etc/hostname", "local_dir": "d"}
    assert "exactly one of hosts or tag" in mcp.error("ssh_download_many", **down)
    assert "exactly one of hosts or tag" in mcp.error("ssh_download_many", hosts=["a"], tag="t", **down)
    assert "empty" in mcp.error("ssh_download_many", hosts=[], **down)
    assert "file name" in mcp.error("ssh_download_many", hosts=["a"], remote_path="/", local_dir="d")
    assert "no host with tag" in mcp.error("ssh_download_many", tag="nothing", **down)
    assert not AuditEvent.objects.filter(tool__in=["ssh_upload_many", "ssh_download_many"]).exists()
    assert not (local_root().parent / "outside.txt").exists()
