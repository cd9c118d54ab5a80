"""The embedded default hands the tool's own objects to the task: no JSON, no base64 between them."""

from __future__ import annotations

import pytest

from sshcontrol import wire
from tests.mcp.conftest import McpHarness


def test_it_never_serialises_on_the_embedded_default(
    mcp: McpHarness, make_host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded dispatcher hands the tool's own objects to the task: no JSON, no base64."""

    def refuse(*args: object) -> object:
        raise AssertionError("the embedded default must not serialise a task's request or reply")

    monkeypatch.setattr(wire, "dump", refuse)
    monkeypatch.setattr(wire, "load", refuse)
    make_host("web1")
    ran = mcp.ok("ssh_execute", host="web1", command="cat", stdin="caf\u00e9 \u2603\n")
    assert (ran["exit_status"], ran["stdout"]) == (0, "caf\u00e9 \u2603\n")
    uploaded = mcp.ok(
        "ssh_upload_file", host="web1", remote_path="wire.bin", content="AP8K", content_encoding="base64"
    )
    assert uploaded["bytes"] == 3
    downloaded = mcp.ok("ssh_download_file", host="web1", remote_path="wire.bin")
    assert (downloaded["content"], downloaded["content_encoding"]) == ("AP8K", "base64")
