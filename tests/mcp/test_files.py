"""File tools end to end against the real sshd: upload, download, listing, and the local-path fence."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sshcontrol.localfiles import local_root
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer


@pytest.fixture
def remote_dir(mcp: McpHarness, make_host, sshd: SshServer) -> str:
    make_host("h")
    path = f"/tmp/sshc-files-{sshd.user}"
    mcp.ok("ssh_execute", host="h", command=f"rm -rf {path} && mkdir -p {path}")
    return path


def test_it_uploads_inline_content_atomically_with_mode_and_hash(mcp: McpHarness, remote_dir: str) -> None:
    target = f"{remote_dir}/hello.txt"
    result = mcp.ok("ssh_upload_file", host="h", remote_path=target, content="héllo\n", file_mode="0640")
    assert (
        result["bytes"] == len("héllo\n".encode())
        and result["sha256"] == hashlib.sha256("héllo\n".encode()).hexdigest()
    )
    listing = mcp.ok("ssh_execute", host="h", command=f"stat -c '%a %s' {target}; ls -a {remote_dir}")
    assert listing["stdout"].splitlines()[0] == "640 7"
    assert not [n for n in listing["stdout"].split() if n.endswith(".tmp")], (
        "no temporary file is left behind"
    )
    row = AuditEvent.objects.get(pk=result["audit_id"])
    assert row.tool == "ssh_upload_file" and row.file_size == 7 and row.file_sha256 == result["sha256"]
    assert row.remote_path == target


def test_it_refuses_to_overwrite_unless_asked(mcp: McpHarness, remote_dir: str) -> None:
    target = f"{remote_dir}/f"
    mcp.ok("ssh_upload_file", host="h", remote_path=target, content="one")
    assert "overwrite" in mcp.error("ssh_upload_file", host="h", remote_path=target, content="two")
    mcp.ok("ssh_upload_file", host="h", remote_path=target, content="two", overwrite=True)
    assert mcp.ok("ssh_download_file", host="h", remote_path=target)["content"] == "two"
    assert AuditEvent.objects.filter(tool="ssh_upload_file", status="error").count() == 1


def test_it_takes_base64_and_octal_modes_as_integers(mcp: McpHarness, remote_dir: str) -> None:
    payload = bytes(range(256))
    import base64

    result = mcp.ok(
        "ssh_upload_file",
        host="h",
        remote_path=f"{remote_dir}/bin",
        content=base64.b64encode(payload).decode(),
        content_encoding="base64",
        file_mode=755,
    )
    assert result["sha256"] == hashlib.sha256(payload).hexdigest()
    assert mcp.ok("ssh_execute", host="h", command=f"stat -c %a {remote_dir}/bin")["stdout"] == "755\n"
    down = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/bin")
    assert down["content_encoding"] == "base64" and base64.b64decode(down["content"]) == payload
    assert "not valid base64" in mcp.error(
        "ssh_upload_file", host="h", remote_path=f"{remote_dir}/x", content="@@@", content_encoding="base64"
    )
    assert "octal" in mcp.error(
        "ssh_upload_file", host="h", remote_path=f"{remote_dir}/x", content="", file_mode="rwx"
    )


def test_it_moves_files_through_the_transfer_directory(mcp: McpHarness, remote_dir: str) -> None:
    root = local_root()
    (root / "in.bin").write_bytes(os.urandom(300_000))
    up = mcp.ok("ssh_upload_file", host="h", remote_path=f"{remote_dir}/in.bin", local_path="in.bin")
    down = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/in.bin", local_path="out.bin")
    assert down["sha256"] == up["sha256"] == hashlib.sha256((root / "in.bin").read_bytes()).hexdigest()
    assert (root / "out.bin").read_bytes() == (root / "in.bin").read_bytes()
    assert down["content"] is None and down["local_path"] == str(root / "out.bin")
    assert "already exists" in mcp.error(
        "ssh_download_file", host="h", remote_path=f"{remote_dir}/in.bin", local_path="out.bin"
    )
    mcp.ok(
        "ssh_download_file",
        host="h",
        remote_path=f"{remote_dir}/in.bin",
        local_path="out.bin",
        overwrite=True,
    )


@pytest.mark.parametrize("escape", ["../outside.txt", "/etc/passwd", "sub/../../outside.txt", "link/passwd"])
def test_it_confines_local_paths_to_the_transfer_directory(
    mcp: McpHarness, remote_dir: str, escape: str
) -> None:
    root = local_root()
    link = root / "link"
    if not link.exists():
        link.symlink_to("/etc")
    message = mcp.error("ssh_upload_file", host="h", remote_path=f"{remote_dir}/x", local_path=escape)
    assert "outside the transfer directory" in message or "does not exist" in message
    assert "outside the transfer directory" in mcp.error(
        "ssh_download_file", host="h", remote_path="/etc/hostname", local_path=escape, overwrite=True
    )
    assert not (root.parent / "outside.txt").exists()


def test_it_pages_inline_downloads_bigger_than_the_budget(mcp: McpHarness, remote_dir: str) -> None:
    big = settings.OUTPUT_BUDGET_BYTES + 1
    mcp.ok("ssh_execute", host="h", command=f"head -c {big} /dev/zero > {remote_dir}/big")
    first = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/big")
    assert first["file_size"] == big and first["next_offset"] == first["bytes"] < big
    text = mcp.text("ssh_download_file", host="h", remote_path=f"{remote_dir}/big")
    assert f"offset={first['next_offset']}" in text


def test_it_lists_files_with_types_modes_and_symlinks(mcp: McpHarness, remote_dir: str) -> None:
    mcp.ok(
        "ssh_execute",
        host="h",
        command=(
            f"cd {remote_dir} && echo hi > a.txt && chmod 600 a.txt && mkdir d && ln -s a.txt l"
            " && touch .hidden"
        ),
    )
    listing = mcp.ok("ssh_list_files", host="h", remote_path=remote_dir)
    entries = {e["name"]: e for e in listing["entries"]}
    assert set(entries) == {"a.txt", "d", "l"}
    assert (
        entries["a.txt"]["type"] == "file"
        and entries["a.txt"]["mode"] == "0600"
        and entries["a.txt"]["size"] == 3
    )
    assert entries["d"]["type"] == "directory"
    assert entries["l"]["type"] == "symlink" and entries["l"]["symlink_target"] == "a.txt"
    hidden = mcp.ok("ssh_list_files", host="h", remote_path=remote_dir, show_hidden=True)
    assert ".hidden" in {e["name"] for e in hidden["entries"]}
    assert "a.txt" in mcp.text("ssh_list_files", host="h", remote_path=remote_dir)
    assert mcp.error("ssh_list_files", host="h", remote_path=f"{remote_dir}/missing")


def test_it_reports_remote_file_errors_clearly(mcp: McpHarness, remote_dir: str) -> None:
    assert "/nonexistent-dir/x" in mcp.error(
        "ssh_upload_file", host="h", remote_path="/nonexistent-dir/x", content="x"
    )
    assert mcp.error("ssh_download_file", host="h", remote_path=f"{remote_dir}/nope")
    assert mcp.error("ssh_download_file", host="h", remote_path=remote_dir)
    assert "exactly one of local_path or content" in mcp.error(
        "ssh_upload_file", host="h", remote_path="/tmp/x"
    )


def test_local_root_is_private(mcp: McpHarness) -> None:
    assert Path(settings.LOCAL_ROOT).resolve() == local_root()
    assert (local_root().stat().st_mode & 0o777) == 0o700
