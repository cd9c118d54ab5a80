"""Commands carrying invisible or reordering characters are refused before they reach a host.

The admin reads commands (approvals, audit); a bidi control can make one look like another
(issue 9 item 3). Refused by default, allowed by SSHCONTROL_ALLOW_INVISIBLE_CHARACTERS.
"""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from tests.mcp.conftest import McpHarness

# Drawn by Chromium as "echo done # ; touch pwned" read backwards: the touch looks commented out.
BIDI_ATTACK = "echo done \u2067; touch /tmp/sshc-bidi-pwned \u2066# harmless\u2069\u2069"


# Commands with a hidden character, and how the refusal names it (ssh_execute_many is held to
# the same list: tests/mcp/test_execute_many_rules.py).
HIDDEN = [
    (BIDI_ATTACK, "U+2067 RIGHT-TO-LEFT ISOLATE"),
    ("echo a\u202eb", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("rm\u200b -rf x", "U+200B ZERO WIDTH SPACE"),
    ("echo a\u00a0b", "U+00A0 NO-BREAK SPACE"),
    ("echo\ufeff ok", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("ls\r\nid", "U+000D"),
    ("echo \x7f", "U+007F"),
    ("echo a\u2028id", "U+2028 LINE SEPARATOR"),
]


@pytest.mark.parametrize(("command", "named"), HIDDEN)
def test_it_refuses_hidden_characters_before_anything_runs(
    mcp: McpHarness, make_host, command: str, named: str
) -> None:
    make_host("h")
    message = mcp.error("ssh_execute", host="h", command=command)
    assert "invisible, reordering or control characters" in message and named in message
    assert "SSHCONTROL_ALLOW_INVISIBLE_CHARACTERS" in message
    assert not AuditEvent.objects.exists(), "a refused command never opens an audit row"


def test_it_refuses_them_in_the_working_directory_too(mcp: McpHarness, make_host) -> None:
    make_host("h")
    message = mcp.error("ssh_execute", host="h", command="ls", working_directory="/tmp/\u202eevil")
    assert "working_directory contains invisible" in message and "U+202E" in message
    assert not AuditEvent.objects.exists()


def test_it_runs_them_when_the_administrator_allows_them(mcp: McpHarness, make_host, settings) -> None:
    settings.ALLOW_INVISIBLE_CHARACTERS = True
    make_host("h")
    result = mcp.ok("ssh_execute", host="h", command="printf 'a\u200bb'")
    assert result["stdout"] == "a\u200bb"
    assert AuditEvent.objects.get(pk=result["audit_id"]).command == "printf 'a\u200bb'"


def test_it_still_runs_ordinary_unicode(mcp: McpHarness, make_host) -> None:
    make_host("h")
    result = mcp.ok("ssh_execute", host="h", command="echo 'grüße שלום ✓'")
    assert result["stdout"] == "grüße שלום ✓\n"
