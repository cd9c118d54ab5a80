"""Host names cannot be probed (issue 9, item 9): unregistered and ungranted hosts answer alike.

The same name is asked for before and after it is registered (for another client), so the
two answers can be compared byte for byte; the audit rows still tell the admin which it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audit.models import AuditEvent
from hosts.models import Host, McpClient
from tests.mcp.conftest import McpHarness

AsClient = Callable[..., McpHarness]

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("ssh_execute", {"command": "id"}),
    ("ssh_start_job", {"command": "id"}),
    ("ssh_connect", {}),
    ("ssh_list_files", {"remote_path": "."}),
    ("ssh_download_file", {"remote_path": "f"}),
    ("ssh_upload_file", {"remote_path": "f", "content": "x"}),
]


def answers(client: McpHarness, host: str) -> list[Any]:
    """Every tool's whole result for ``host``: error flag, text and structured content."""
    out = []
    for tool, arguments in CALLS:
        result = client.call(tool, host=host, **arguments)
        assert result.is_error, (tool, result)
        out.append(result.model_dump())
    return out


def test_it_answers_byte_for_byte_alike_for_an_unregistered_and_an_ungranted_host(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    web = make_host("web1")
    # Write too, so that every tool here is offered to alpha (mcp/visibility.py refuses the others
    # before any host is looked up, alike for every name).
    alpha = as_client("alpha", hosts=[web], can_write_files=True)
    unregistered = answers(alpha, "db1")
    make_host("db1")  # registered now, and granted to another client only
    as_client("beta", all_hosts=True)
    ungranted = answers(alpha, "db1")
    assert ungranted == unregistered
    assert unregistered[0]["content"][0]["text"] == (
        "Error executing tool ssh_execute: host 'db1' is not available to client 'alpha' "
        "(not registered, or not granted to it); ssh_list_hosts shows yours"
    )
    # A disabled host that is not granted says no more.
    make_host("off", enabled=False)
    assert answers(alpha, "off") == [
        {**r, "content": [{**r["content"][0], "text": r["content"][0]["text"].replace("'db1'", "'off'")}]}
        for r in unregistered
    ]
    # The admin still sees the truth in the audit log.
    rows = list(AuditEvent.objects.filter(client="alpha").order_by("id"))
    assert len(rows) == 3 * len(CALLS)
    assert {(r.status, r.error) for r in rows[: len(CALLS)]} == {
        ("error", "no host named 'db1' is registered")
    }
    assert {(r.status, r.error, r.host_name) for r in rows[len(CALLS) : 2 * len(CALLS)]} == {
        ("denied", "host 'db1' is registered but no grant of client 'alpha' covers it", "db1")
    }
    assert {r.error for r in rows[2 * len(CALLS) :]} == {
        "host 'off' is registered (and disabled) but no grant of client 'alpha' covers it"
    }


def test_it_tells_a_granted_client_that_its_host_is_disabled(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    off = make_host("off", enabled=False)
    alpha = as_client("alpha", hosts=[off])
    assert alpha.error("ssh_execute", host="off", command="id").endswith(
        ": host 'off' is disabled by an administrator"
    )


def test_it_tells_a_disabled_client_only_that_it_is_disabled(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    make_host("db1")
    alpha = as_client("alpha", all_hosts=True)
    McpClient.objects.filter(name="alpha").update(enabled=False)
    from hosts.access import forget

    forget()  # update() sends no save signal
    registered = alpha.error("ssh_execute", host="db1", command="id")
    unregistered = alpha.error("ssh_execute", host="nope", command="id")
    assert registered == unregistered
    assert registered.endswith(": client 'alpha' is disabled by an administrator")
