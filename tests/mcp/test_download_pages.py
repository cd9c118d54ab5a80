"""ssh_download_file inline within the output budget: small files whole, big ones page by page.

Against the suite's sshd: files are written with ssh_upload_file (exact bytes), read back
through every page, and put together again.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from django.test import override_settings

from audit.models import AuditEvent
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

BUDGET = 4096


@pytest.fixture
def remote_dir(mcp: McpHarness, make_host, sshd: SshServer) -> str:  # type: ignore[no-untyped-def]
    make_host("h")
    path = f"/tmp/sshc-pages-{sshd.user}"
    mcp.ok("ssh_execute", host="h", command=f"rm -rf {path} && mkdir -p {path}")
    return path


def put(mcp: McpHarness, path: str, data: bytes) -> None:
    mcp.ok(
        "ssh_upload_file",
        host="h",
        remote_path=path,
        content=base64.b64encode(data).decode(),
        content_encoding="base64",
        overwrite=True,
    )


def pages(mcp: McpHarness, path: str, **arguments: Any) -> list[dict[str, Any]]:
    got = [mcp.ok("ssh_download_file", host="h", remote_path=path, **arguments)]
    while got[-1]["next_offset"] is not None:
        assert len(got) < 1000
        got.append(mcp.ok("ssh_download_file", host="h", remote_path=path, offset=got[-1]["next_offset"]))
    return got


def joined(got: list[dict[str, Any]]) -> bytes:
    def raw(page: dict[str, Any]) -> bytes:
        text: str = page["content"]
        return text.encode() if page["content_encoding"] == "utf-8" else base64.b64decode(text)

    return b"".join(raw(p) for p in got)


@override_settings(OUTPUT_BUDGET_BYTES=BUDGET)
def test_a_small_file_comes_whole(mcp: McpHarness, remote_dir: str) -> None:
    put(mcp, f"{remote_dir}/small", b"hello\n")
    result = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/small")
    assert result["content"] == "hello\n" and result["next_offset"] is None and result["file_size"] == 6
    assert result["sha256"] == hashlib.sha256(b"hello\n").hexdigest()


@override_settings(OUTPUT_BUDGET_BYTES=BUDGET)
def test_a_text_file_comes_in_pages_of_whole_lines(mcp: McpHarness, remote_dir: str) -> None:
    data = "".join(f"line {n}\n" for n in range(20000)).encode()
    put(mcp, f"{remote_dir}/text", data)
    got = pages(mcp, f"{remote_dir}/text")
    assert joined(got) == data and len(got) > len(data) // BUDGET
    for page in got:
        assert page["content_encoding"] == "utf-8" and page["file_size"] == len(data)
        assert page["bytes"] <= BUDGET and page["content"].endswith("\n")
        assert page["sha256"] == hashlib.sha256(page["content"].encode()).hexdigest()
    assert [p["offset"] for p in got[1:]] == [p["next_offset"] for p in got[:-1]]
    text = mcp.text("ssh_download_file", host="h", remote_path=f"{remote_dir}/text")
    assert f"is {len(data)} bytes" in text and f"offset={got[0]['next_offset']}" in text
    row = AuditEvent.objects.filter(tool="ssh_download_file").last()
    assert row is not None and row.details["file_size"] == len(data)


@override_settings(OUTPUT_BUDGET_BYTES=BUDGET)
def test_a_page_never_ends_inside_a_character(mcp: McpHarness, remote_dir: str) -> None:
    data = ("é€" * 5000).encode()  # 2- and 3-byte characters, no newline
    put(mcp, f"{remote_dir}/wide", data)
    got = pages(mcp, f"{remote_dir}/wide")
    assert all(p["content_encoding"] == "utf-8" for p in got) and joined(got) == data


@override_settings(OUTPUT_BUDGET_BYTES=BUDGET)
def test_binary_content_comes_as_base64_pages_within_the_budget(mcp: McpHarness, remote_dir: str) -> None:
    data = os.urandom(50_000)
    put(mcp, f"{remote_dir}/bin", data)
    got = pages(mcp, f"{remote_dir}/bin")
    assert all(p["content_encoding"] == "base64" and len(p["content"]) <= BUDGET for p in got)
    assert joined(got) == data


@override_settings(OUTPUT_BUDGET_BYTES=BUDGET)
def test_length_asks_for_less_and_offset_past_the_end_gives_nothing(mcp: McpHarness, remote_dir: str) -> None:
    put(mcp, f"{remote_dir}/abc", b"abcdefghij")
    middle = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/abc", offset=2, length=3)
    assert (middle["content"], middle["offset"], middle["next_offset"]) == ("cde", 2, 5)
    past = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/abc", offset=99)
    assert past["content"] == "" and past["next_offset"] is None and past["file_size"] == 10
    huge = mcp.ok("ssh_download_file", host="h", remote_path=f"{remote_dir}/abc", length=10**9)
    assert huge["content"] == "abcdefghij"


def test_offset_with_a_local_path_is_refused(mcp: McpHarness, remote_dir: str) -> None:
    message = mcp.error("ssh_download_file", host="h", remote_path="/etc/hostname", local_path="x", offset=5)
    assert "offset and length" in message


@override_settings(OUTPUT_BUDGET_BYTES=BUDGET)
def test_a_private_key_across_two_pages_is_hidden_on_both(mcp: McpHarness, remote_dir: str) -> None:
    body = "".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{n:06d}\n" for n in range(40))
    key = f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"
    data = ("".join(f"line {n}\n" for n in range(400)) + key + "after\n").encode()
    put(mcp, f"{remote_dir}/key", data)
    got = pages(mcp, f"{remote_dir}/key")
    spanned = [p for p in got if "PRIVATE KEY" in p["content"]]
    assert len(spanned) == 2, "the key must straddle a page boundary for this test"
    assert not any("MIIEvQ" in p["content"] for p in got)
    assert all(p["redactions"] == 1 for p in spanned)
