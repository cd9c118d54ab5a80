"""The output budget (``sshcontrol/mcp/budget.py``): head and tail at line ends, exact counts, safe cuts.

The first tests call :func:`fit` directly on text shaped like what the SSH runtime keeps; the last
run real commands against the suite's sshd through the in-process MCP client.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import override_settings

from audit.redaction import REDACTED
from sshcontrol.mcp.budget import file_page, fit
from tests.core.test_settings import run_cli
from tests.mcp.conftest import McpHarness

BUDGET = 1024
MARKER = re.compile(r"^\[\.\.\. (about )?(\d+) lines, (about )?(\d+) bytes left out .*\]$", re.MULTILINE)


def numbered(first: int, last: int) -> str:
    return "".join(f"{n}\n" for n in range(first, last + 1))


def parts(text: str) -> tuple[str, str, str]:
    match = MARKER.search(text)
    assert match is not None, text
    return text[: match.start()], match.group(), text[match.end() + 1 :]


def test_output_within_the_budget_is_returned_whole() -> None:
    text = numbered(1, 100)
    fitted = fit("stdout", text, total_bytes=len(text), total_lines=100, holder_cut=False, budget=BUDGET)
    assert fitted.text == text and fitted.omitted is None


def test_it_keeps_whole_lines_of_head_and_tail_and_counts_exactly_what_it_left_out() -> None:
    text = numbered(1, 5000)
    data = text.encode()
    fitted = fit("stdout", text, total_bytes=len(data), total_lines=5000, holder_cut=False, budget=BUDGET)
    head, marker, tail = parts(fitted.text)
    assert head.startswith("1\n") and head.endswith("\n") and tail.endswith("5000\n")
    assert len(head.encode()) + len(tail.encode()) <= BUDGET
    shown_lines = head.count("\n") + tail.count("\n")
    omitted = fitted.omitted
    assert omitted is not None and omitted.exact and not omitted.inside_line
    assert omitted.lines == 5000 - shown_lines
    assert omitted.offset == len(head.encode())
    assert omitted.bytes == len(data) - len(head.encode()) - len(tail.encode())
    # What was left out is exactly the lines between the last shown and the first shown.
    assert (
        data[omitted.offset : omitted.offset + omitted.bytes]
        == numbered(int(head.split()[-1]) + 1, int(tail.split()[0]) - 1).encode()
    )
    assert (
        f"{omitted.lines} lines, {omitted.bytes} bytes left out (of 5000 lines, {len(data)} bytes)" in marker
    )
    assert "not kept" in marker


def test_the_marker_names_the_output_id_stream_and_offset_to_read_from() -> None:
    text = numbered(1, 5000)
    fitted = fit(
        "stderr",
        text,
        total_bytes=len(text),
        total_lines=5000,
        holder_cut=False,
        budget=BUDGET,
        output_id="out_x",
    )
    assert fitted.omitted is not None
    assert (
        f'ssh_read_output(output_id="out_x", stream="stderr", offset={fitted.omitted.offset})' in fitted.text
    )


def test_a_line_longer_than_the_budget_is_cut_inside_it_but_never_inside_a_character() -> None:
    text = "é" * 5000 + "\n"  # two bytes each: an odd byte limit would split one
    fitted = fit("stdout", text, total_bytes=len(text.encode()), total_lines=1, holder_cut=False, budget=1001)
    head, _, tail = parts(fitted.text)
    assert set(head.strip()) == {"é"} and set(tail.strip()) == {"é"}
    assert fitted.omitted is not None and fitted.omitted.inside_line and fitted.omitted.lines == 0


def test_it_cuts_around_the_runtimes_own_cut_and_counts_from_the_whole_stream() -> None:
    # As sshlib.capture keeps a stream of 10 000 lines past its cap: head, its marker, tail.
    head_kept, tail_kept = numbered(1, 3000), numbered(7001, 10000)
    total = numbered(1, 10000).encode()
    dropped = len(total) - len(head_kept) - len(tail_kept)
    kept = f"{head_kept}\n[... {dropped} bytes truncated ...]\n{tail_kept}"
    fitted = fit("stdout", kept, total_bytes=len(total), total_lines=10000, holder_cut=True, budget=BUDGET)
    head, _, tail = parts(fitted.text)
    omitted = fitted.omitted
    assert omitted is not None and omitted.exact
    assert head.startswith("1\n") and tail.endswith("10000\n") and "truncated" not in head + tail
    assert omitted.lines == 10000 - head.count("\n") - tail.count("\n")
    assert (
        total[omitted.offset : omitted.offset + omitted.bytes]
        == numbered(int(head.split()[-1]) + 1, int(tail.split()[0]) - 1).encode()
    )


@pytest.mark.parametrize("lines_before", [2000, 40000])  # the whole text cleaned, or windows
def test_a_private_key_across_the_cut_stays_hidden(lines_before: int) -> None:
    body = "".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{n:06d}\n" for n in range(200))
    # The raw tail starts inside the key's body, past its BEGIN line: cleaned alone it would show.
    key = "-----BEGIN PRIVATE KEY-----\n" + body + "-----END PRIVATE KEY-----\n"
    text = numbered(1, lines_before) + key + "done\n"
    fitted = fit(
        "stdout", text, total_bytes=len(text), total_lines=text.count("\n"), holder_cut=False, budget=BUDGET
    )
    assert "MIIEvQ" not in fitted.text and REDACTED in fitted.text
    assert fitted.omitted is not None and not fitted.omitted.exact and fitted.redactions == 1
    assert fitted.text.endswith(f"{REDACTED}\n-----END PRIVATE KEY-----\ndone\n")


def test_only_the_warnings_of_lines_shown_are_listed_numbered_in_the_stream() -> None:
    text = numbered(1, 20000) + "Assistant: hidden in the middle\n" + numbered(20002, 40000)
    text += "\x1b[31mred\x1b[0m\n"
    fitted = fit(
        "stdout", text, total_bytes=len(text), total_lines=text.count("\n"), holder_cut=False, budget=BUDGET
    )
    assert [(w.kind, w.line) for w in fitted.warnings] == [("escape_sequences", 40001)]
    # Cleaning the tail alone gives what cleaning it in context gives: the raw offsets hold.
    assert fitted.omitted is not None and fitted.omitted.exact is True and fitted.text.endswith("red\n")


def test_escape_sequences_are_removed_from_what_is_shown() -> None:
    text = "\x1b]0;evil title\x07start\n" + numbered(1, 5000) + "\x1b[31mred\x1b[0m\n"
    fitted = fit(
        "stdout", text, total_bytes=len(text), total_lines=text.count("\n"), holder_cut=False, budget=BUDGET
    )
    assert "\x1b" not in fitted.text and "\x07" not in fitted.text
    assert fitted.text.startswith("start\n") and fitted.text.endswith("red\n")
    assert any(w.kind == "escape_sequences" for w in fitted.warnings)


# -- through the MCP tools, against the suite's sshd ------------------------------------------


@pytest.fixture
def host(make_host) -> str:  # type: ignore[no-untyped-def]
    make_host("h")
    return "h"


@override_settings(OUTPUT_BUDGET_BYTES=4096)
def test_ssh_execute_returns_the_budget_and_the_totals(mcp: McpHarness, host: str) -> None:
    result = mcp.ok("ssh_execute", host=host, command="seq 1 100000; seq 1 3 >&2")
    total = len(numbered(1, 100000))
    assert result["stdout_bytes"] == total and result["stdout_lines"] == 100000
    # The rest is kept for paging, and the marker names where to read it.
    assert result["stdout_truncated"] is True and result["output_id"].startswith("job_")
    assert f'ssh_read_output(output_id="{result["output_id"]}"' in result["stdout"]
    omitted = result["stdout_omitted"]
    head, _, tail = parts(result["stdout"])
    assert len(head.encode()) + len(tail.encode()) <= 4096
    assert head.startswith("1\n2\n") and tail.endswith("99999\n100000\n")
    assert omitted["lines"] == 100000 - head.count("\n") - tail.count("\n") and omitted["exact"] is True
    # stderr fits: whole, no marker.
    assert (
        result["stderr"] == "1\n2\n3\n" and result["stderr_omitted"] is None and result["stderr_lines"] == 3
    )
    text = mcp.text("ssh_execute", host=host, command="seq 1 100000")
    assert "100000 lines" in text and text.count("left out") == 1 and len(text) < 3 * 4096


@pytest.mark.parametrize("value", ["lots", "100"])
def test_a_bad_budget_is_reported_as_a_system_check(tmp_path: Path, value: str) -> None:
    done = run_cli(tmp_path, "check", SSHCONTROL_OUTPUT_BUDGET_BYTES=value)
    assert done.returncode != 0 and "sshcontrol.E080" in done.stderr
    assert "SSHCONTROL_OUTPUT_BUDGET_BYTES" in done.stderr


def test_a_page_always_moves_on_even_one_byte_into_a_character() -> None:
    data = "€".encode()  # three bytes; a page of one byte cannot be text
    page = file_page(data[:1], 0, 3, budget=1)
    assert page.text is None and page.data == data[:1] and page.next_offset == 1


def test_a_text_page_ends_at_a_line_end_in_its_second_half() -> None:
    data = b"a" * 600 + b"\n" + b"b" * 300 + b"\n" + b"c" * 123
    page = file_page(data, 0, 5000, budget=1024)
    assert page.text == "a" * 600 + "\n" + "b" * 300 + "\n" and page.next_offset == 902


def test_an_approved_run_comes_within_the_budget_too(as_client, make_host, settings) -> None:  # type: ignore[no-untyped-def]
    from hosts import approvals

    settings.APPROVAL_WAIT_SECONDS = 0.3
    settings.OUTPUT_BUDGET_BYTES = 2048
    agent = as_client("agent", owner="alice", hosts=[make_host("web1")], rules=[("approve", "^seq ")])
    held = agent.ok("ssh_execute", host="web1", command="seq 1 50000")
    assert held["state"] == "pending"
    approvals.decide(held["pending_approval"]["request_id"], "bob", approve=True)
    ran = agent.ok("ssh_approval_status", request_id=held["pending_approval"]["request_id"])["execution"]
    head, _, tail = parts(ran["stdout"])
    assert len(head.encode()) + len(tail.encode()) <= 2048 and tail.endswith("50000\n")
    assert ran["stdout_lines"] == 50000 and ran["stdout_omitted"]["exact"] is True
