"""tools/list shows each caller only the tools (and arguments) its grants allow; hidden tools are refused.

Through the real MCP client/server path, as clients with different grants (stdio-style fixed
callers; the HTTP and IdP callers are covered in test_oauth).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.test import override_settings

from audit.models import AuditEvent
from hosts.access import forget
from hosts.models import Grant, Host, McpClient
from tests.mcp.conftest import McpHarness

AsClient = Callable[..., McpHarness]
ALWAYS = {"ssh_list_hosts", "ssh_status"}
JOB_TOOLS = {"ssh_start_job", "ssh_job_status", "ssh_cancel_job", "ssh_list_jobs", "ssh_read_output"}


def listed(harness: McpHarness) -> dict[str, Any]:
    return {t.name: t for t in harness.run(harness.client.list_tools()).tools}


def arguments(harness: McpHarness, tool: str) -> set[str]:
    return set(listed(harness)[tool].input_schema["properties"])


def test_it_lists_only_listing_tools_for_a_list_only_grant(as_client: AsClient, make_host) -> None:
    viewer = as_client(
        "viewer", hosts=[make_host("web1")], can_execute=False, can_read_files=False, can_write_files=False
    )
    assert set(listed(viewer)) == ALWAYS
    assert [h["name"] for h in viewer.ok("ssh_list_hosts")["hosts"]] == ["web1"]


def test_it_lists_only_listing_tools_for_a_client_without_grants(as_client: AsClient) -> None:
    assert set(listed(as_client("nobody", grant=False))) == ALWAYS


def test_it_offers_no_upload_and_no_sudo_argument_without_those_grants(
    as_client: AsClient, make_host
) -> None:
    runner = as_client("runner", hosts=[make_host("web1")])  # execute + read, no write, no sudo
    tools = listed(runner)
    assert set(tools) == ALWAYS | {
        "ssh_connect",
        "ssh_disconnect",
        "ssh_execute",
        "ssh_execute_many",
        "ssh_approval_status",
        "ssh_download_file",
        "ssh_download_many",
        "ssh_list_files",
        *JOB_TOOLS,
    }
    assert "sudo" not in arguments(runner, "ssh_execute")
    assert "sudo" not in arguments(runner, "ssh_execute_many")
    assert "sudo" not in arguments(runner, "ssh_start_job")
    assert {"command", "host", "session_id", "stdin"} <= arguments(runner, "ssh_execute")
    assert not {"password", "address", "username"} & arguments(runner, "ssh_connect")


def test_it_offers_upload_and_sudo_where_some_grant_allows_them(as_client: AsClient, make_host) -> None:
    web1, web2 = make_host("web1"), make_host("web2")
    admin = as_client("ops", hosts=[web1], can_write_files=True)
    # A second grant, on another host, adds sudo: the union of grants decides what is offered.
    second = Grant.objects.create(client=McpClient.objects.get(name="ops"), can_sudo=True)
    second.hosts.set([web2])
    tools = listed(admin)
    assert "ssh_upload_file" in tools and "ssh_upload_many" in tools
    assert "ssh_copy" in tools  # reads and writes (on web1)
    assert "sudo" in arguments(admin, "ssh_execute")
    assert "sudo" in arguments(admin, "ssh_execute_many")
    assert "sudo" in arguments(admin, "ssh_start_job")


def test_it_offers_ad_hoc_arguments_only_where_enabled_and_granted(as_client: AsClient, make_host) -> None:
    adhoc = as_client("adhoc", hosts=[make_host("web1")], can_adhoc_connect=True)
    assert "password" not in arguments(adhoc, "ssh_connect")
    with override_settings(ALLOW_ADHOC_CONNECT=True):
        assert {"address", "username", "password", "port"} <= arguments(adhoc, "ssh_connect")


def test_it_follows_a_grant_change_at_the_next_list(as_client: AsClient, make_host) -> None:
    runner = as_client("changing", hosts=[make_host("web1")])
    assert "ssh_upload_file" not in listed(runner)
    Grant.objects.filter(client__name="changing").update(can_write_files=True)
    forget()  # update() sends no signal; an admin's save in the admin does
    assert "ssh_upload_file" in listed(runner)


def test_it_refuses_and_audits_a_call_to_a_tool_not_offered(as_client: AsClient, make_host) -> None:
    viewer = as_client(
        "viewer", hosts=[make_host("web1")], can_execute=False, can_read_files=False, can_write_files=False
    )
    message = viewer.error("ssh_upload_file", host="web1", remote_path="/tmp/x", content="x")
    assert "may not write files on any host" in message
    assert "may not run commands" in viewer.error("ssh_execute", host="web1", command="id")
    events = list(AuditEvent.objects.filter(client="viewer").order_by("id"))
    assert [(e.tool, e.status, e.host_name) for e in events] == [
        ("ssh_upload_file", "denied", "web1"),
        ("ssh_execute", "denied", "web1"),
    ]
    assert events[0].remote_path == "/tmp/x" and events[1].command == "id"
    assert events[0].details["tool_not_offered"] is True
    assert Host.objects.filter(name="web1").exists()


def test_it_lists_only_listing_tools_for_a_disabled_client(as_client: AsClient, make_host) -> None:
    runner = as_client("disabled", hosts=[make_host("web1")])
    McpClient.objects.filter(name="disabled").update(enabled=False)
    forget()
    assert set(listed(runner)) == ALWAYS
    assert "disabled by an administrator" in runner.error("ssh_execute", host="web1", command="id")
