"""The MCP tools end to end, in-process through the SDK client, against the suite's real sshd."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from django.conf import settings

from audit.models import AuditEvent
from hosts.models import HostKey
from sshcontrol.models import SshSession
from sshlib.sessions import registry
from tests.database import raw_sqlite_bytes
from tests.hostkeys import trust
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer


def wait_until_gone(sshd: SshServer, pattern: str, seconds: float = 5.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = sshd.user_processes(pattern)
        if not left:
            return []
        time.sleep(0.1)
    return sshd.user_processes(pattern)


def connection_dropped(session_id: str) -> bool:
    """Whether this process's connection of the session has noticed that its server side is gone."""
    session = registry.get(session_id)
    return session is not None and not session.connection.is_active()


def test_it_lists_registered_hosts_with_tags_and_key_state(mcp: McpHarness, make_host) -> None:
    make_host("web1", tags=["web", "prod"], description="front end")
    make_host("db1", tags=["db"], trusted=False)
    listed = mcp.ok("ssh_list_hosts")
    by_name = {h["name"]: h for h in listed["hosts"]}
    assert set(by_name) == {"web1", "db1"}
    assert by_name["web1"]["host_key_state"] == "trusted"
    assert by_name["db1"]["host_key_state"] == "unknown"
    assert by_name["web1"]["tags"] == ["web", "prod"]
    assert [h["name"] for h in (mcp.ok("ssh_list_hosts", tag="db"))["hosts"]] == ["db1"]
    assert [h["name"] for h in (mcp.ok("ssh_list_hosts", search="FRONT"))["hosts"]] == ["web1"]
    assert "| web1 |" in mcp.text("ssh_list_hosts")
    as_json = mcp.text("ssh_list_hosts", response_format="json")
    assert json.loads(as_json)["count"] == 2


def test_it_connects_by_name_with_unique_session_ids_and_reuses_on_request(
    mcp: McpHarness, make_host, sshd: SshServer
) -> None:
    make_host("web1", auth="ed25519")
    first = mcp.ok("ssh_connect", host="web1")
    second = mcp.ok("ssh_connect", host="web1")
    assert first["session_id"] != second["session_id"]
    assert first["username"] == sshd.user and first["port"] == sshd.port
    assert first["host_key_fingerprint"].startswith("SHA256:")
    again = mcp.ok("ssh_connect", host="web1", session_id=first["session_id"])
    assert again["session_id"] == first["session_id"] and again["reused"] is True
    rows = AuditEvent.objects.filter(tool="ssh_connect").order_by("id")
    assert [r.status for r in rows] == ["ok", "ok", "ok"]


@pytest.mark.parametrize("auth", ["password", "ed25519", "rsa", "ecdsa"])
def test_it_authenticates_with_every_credential_kind(mcp: McpHarness, make_host, auth: str) -> None:
    make_host("h", auth=auth)
    result = mcp.ok("ssh_execute", host="h", command="whoami")
    assert result["exit_status"] == 0 and result["stdout"].strip()


def test_it_refuses_unknown_and_disabled_hosts_with_an_audit_row(mcp: McpHarness, make_host) -> None:
    make_host("off", enabled=False)
    message = mcp.error("ssh_execute", host="nope", command="true")
    assert "host 'nope' is not available to client 'local-" in message
    message = mcp.error("ssh_execute", host="off", command="true")
    assert "disabled" in message
    unknown = AuditEvent.objects.get(details__host_requested="nope")
    assert unknown.status == "error" and unknown.finished_at is not None
    denied = AuditEvent.objects.get(host_name="off")
    assert denied.status == "denied"


def test_it_reports_a_wrong_password_clearly(mcp: McpHarness, make_host) -> None:
    make_host("h", password="not the password")
    message = mcp.error("ssh_connect", host="h")
    assert "authentication failed" in message.lower()
    assert "not the password" not in message
    row = AuditEvent.objects.get(tool="ssh_connect")
    assert row.status == "error" and "authentication" in row.error.lower()


def test_it_refuses_an_unknown_host_key_and_stores_it_pending(
    mcp: McpHarness, make_host, sshd: SshServer
) -> None:
    host = make_host("fresh", trusted=False)
    message = mcp.error("ssh_connect", host="fresh")
    assert "SHA256:" in message and "hosts trust fresh" in message
    pending = HostKey.objects.filter(host=host, state=HostKey.State.PENDING)
    assert pending.count() == 1
    assert pending.get().fingerprint in message


def test_it_refuses_a_changed_host_key_and_keeps_the_trusted_one(mcp: McpHarness, make_host) -> None:
    import paramiko

    from sshlib.connect import fingerprint

    host = make_host("moved", trusted=False)
    other = paramiko.RSAKey.generate(2048)
    trust(host, other, approved_by="test")
    message = mcp.error("ssh_connect", host="moved")
    assert "HOST KEY CHANGED" in message
    trusted = HostKey.objects.filter(host=host, state=HostKey.State.TRUSTED)
    assert list(trusted.values_list("fingerprint", flat=True)) == [fingerprint(other)]
    assert HostKey.objects.filter(host=host, state=HostKey.State.PENDING).count() == 1
    assert AuditEvent.objects.get(tool="ssh_connect").status == "error"


def test_it_trusts_the_first_key_only_when_the_host_opts_in(mcp: McpHarness, make_host) -> None:
    host = make_host("tofu", trusted=False, trust_on_first_use=True)
    result = mcp.ok("ssh_connect", host="tofu")
    key = HostKey.objects.get(host=host)
    assert key.state == HostKey.State.TRUSTED and key.fingerprint == result["host_key_fingerprint"]


def test_it_returns_a_nonzero_exit_as_a_normal_result_and_audits_it(mcp: McpHarness, make_host) -> None:
    make_host("h")
    result = mcp.ok("ssh_execute", host="h", command="echo out; echo err >&2; exit 3")
    assert result["exit_status"] == 3
    assert result["stdout"] == "out\n" and result["stderr"] == "err\n"
    assert result["stdout_bytes"] == 4 and result["timed_out"] is False
    row = AuditEvent.objects.get(pk=result["audit_id"])
    assert row.status == "ok" and row.exit_status == 3 and row.stdout == "out\n" and row.stderr == "err\n"
    assert row.command == "echo out; echo err >&2; exit 3" and row.session_id == result["session_id"]
    assert row.finished_at is not None and row.started_at <= row.finished_at and row.duration_ms is not None
    second = mcp.ok("ssh_execute", host="h", command="true")
    assert second["session_id"] == result["session_id"], "a host-addressed call reuses the caller's session"


def test_it_kills_a_command_at_its_timeout(mcp: McpHarness, make_host, sshd: SshServer) -> None:
    make_host("h")
    started = time.monotonic()
    result = mcp.ok("ssh_execute", host="h", command="sleep 123; echo never", timeout=1)
    assert time.monotonic() - started < 10
    assert result["timed_out"] is True and result["exit_status"] is None
    assert wait_until_gone(sshd, "sleep 123") == []
    assert AuditEvent.objects.get(pk=result["audit_id"]).status == "timeout"


def test_it_refuses_a_timeout_above_the_maximum(mcp: McpHarness, make_host) -> None:
    make_host("h")
    message = mcp.error("ssh_execute", host="h", command="true", timeout=settings.MAX_TIMEOUT + 1)
    assert "maximum" in message
    assert "greater than 0" in (mcp.error("ssh_execute", host="h", command="true", timeout=-1)).lower()


def test_it_caps_fifty_mebibytes_of_output_keeping_head_and_tail(mcp: McpHarness, make_host) -> None:
    make_host("h")
    command = "printf START; head -c 52428800 /dev/zero | tr '\\0' x; printf END"
    result = mcp.ok("ssh_execute", host="h", command=command, timeout=120)
    assert result["stdout_bytes"] == 52428800 + 8
    assert result["stdout_truncated"] is True
    assert result["stdout"].startswith("START") and result["stdout"].endswith("END")
    assert len(result["stdout"]) <= settings.MAX_OUTPUT_BYTES + 200
    row = AuditEvent.objects.get(pk=result["audit_id"])
    assert row.stdout_truncated and row.stdout_bytes == 52428800 + 8


def test_it_closes_stdin_or_feeds_it(mcp: McpHarness, make_host) -> None:
    make_host("h")
    result = mcp.ok("ssh_execute", host="h", command="cat", timeout=10)
    assert result["exit_status"] == 0 and result["stdout"] == "" and result["timed_out"] is False
    fed = mcp.ok("ssh_execute", host="h", command="tr a-z A-Z", stdin="hello\n")
    assert fed["stdout"] == "HELLO\n"


def test_it_survives_binary_output(mcp: McpHarness, make_host) -> None:
    make_host("h")
    result = mcp.ok("ssh_execute", host="h", command="head -c 4096 /dev/urandom; printf '\\377\\376'")
    assert result["exit_status"] == 0 and result["stdout_bytes"] == 4098
    assert "\ufffd" in result["stdout"]


def test_it_quotes_the_working_directory(mcp: McpHarness, make_host, sshd: SshServer) -> None:
    make_host("h")
    base = f"/tmp/sshc-cwd-{sshd.user}"
    tricky = f"{base}/dir with spaces; id"
    made = mcp.ok("ssh_execute", host="h", command=f"mkdir -p '{tricky}'")
    assert made["exit_status"] == 0
    result = mcp.ok("ssh_execute", host="h", command="pwd", working_directory=tricky)
    assert result["stdout"] == tricky + "\n"
    assert "uid=" not in result["stdout"] + result["stderr"]
    missing = mcp.ok("ssh_execute", host="h", command="pwd", working_directory=f"{base}/missing")
    assert missing["exit_status"] != 0 and missing["stderr"]
    mcp.ok("ssh_execute", host="h", command=f"rm -rf '{base}'")


def test_it_answers_other_calls_while_a_long_command_runs(
    mcp: McpHarness, make_host, sshd: SshServer
) -> None:
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    slow = mcp.submit("ssh_execute", host="h", command="sleep 4")
    wait_until(lambda: sshd.user_processes("sleep 4"), 10, "the slow command is running")
    quick = mcp.ok("ssh_execute", host="h", command="echo quick")
    mcp.ok("ssh_list_hosts")
    assert quick["stdout"] == "quick\n"
    assert not slow.done(), "the quick calls must not wait for the sleeping one"
    assert slow.result(30).structured_content["exit_status"] == 0  # type: ignore[index]


def test_it_kills_the_remote_command_when_the_client_cancels(
    mcp: McpHarness, make_host, sshd: SshServer
) -> None:
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    pending = mcp.submit("ssh_execute", host="h", command="sleep 234")
    wait_until(lambda: sshd.user_processes("sleep 234"), 10, "the command is running")
    pending.cancel()
    assert wait_until_gone(sshd, "sleep 234", seconds=8) == []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        row = AuditEvent.objects.filter(command="sleep 234").first()
        if row is not None and row.status != "running":
            break
        time.sleep(0.1)
    assert row is not None and row.status == "interrupted"


def test_it_reconnects_a_dropped_connection_and_audits_it(
    mcp: McpHarness, make_host, sshd: SshServer
) -> None:
    make_host("h")
    first = mcp.ok("ssh_execute", host="h", command="true")
    # Kill the server side of the connection, as a network drop or sshd restart would.
    subprocess.run(["pkill", "-KILL", "-f", f"sshd: {sshd.user}"], check=False)
    wait_until(lambda: connection_dropped(first["session_id"]), 10, "the client saw the connection drop")
    second = mcp.ok("ssh_execute", session_id=first["session_id"], command="echo back")
    assert second["stdout"] == "back\n" and second["session_id"] == first["session_id"]
    assert AuditEvent.objects.get(pk=second["audit_id"]).reconnected is True


def test_it_reports_status_and_disconnects(mcp: McpHarness, make_host, sshd: SshServer) -> None:
    make_host("h")
    opened = mcp.ok("ssh_connect", host="h")
    mcp.ok("ssh_execute", session_id=opened["session_id"], command="true")
    status = mcp.ok("ssh_status")
    (row,) = status["sessions"]
    assert row["state"] == "connected" and row["commands_run"] == 1 and row["host"] == "h"
    closed = mcp.ok("ssh_disconnect", session_id=opened["session_id"])
    assert closed["was_open"] is True
    assert (mcp.ok("ssh_status", session_id=opened["session_id"]))["sessions"][0]["state"] == "closed"
    assert "closed" in mcp.error("ssh_execute", session_id=opened["session_id"], command="true")
    assert "unknown session_id" in mcp.error("ssh_execute", session_id="nope", command="true")


def test_it_shows_a_dead_connection_as_lost(mcp: McpHarness, make_host, sshd: SshServer) -> None:
    make_host("h")
    opened = mcp.ok("ssh_connect", host="h")
    subprocess.run(["pkill", "-KILL", "-f", f"sshd: {sshd.user}"], check=False)
    wait_until(lambda: connection_dropped(opened["session_id"]), 10, "the client saw the connection drop")
    status = mcp.ok("ssh_status", session_id=opened["session_id"])
    assert status["sessions"][0]["state"] == "lost"
    assert SshSession.objects.get(session_id=opened["session_id"]).state == "lost"


def test_it_requires_exactly_one_target(mcp: McpHarness, make_host) -> None:
    make_host("h")
    assert "exactly one" in mcp.error("ssh_execute", command="true")
    opened = mcp.ok("ssh_connect", host="h")
    assert "exactly one" in mcp.error(
        "ssh_execute", command="true", host="h", session_id=opened["session_id"]
    )


def test_it_rejects_bad_arguments_without_running(mcp: McpHarness, make_host) -> None:
    make_host("h")
    result = mcp.call("ssh_execute", host="h", command="")
    assert result.is_error
    result = mcp.call("ssh_execute", host="h", command="true", response_format="xml")
    assert result.is_error
    assert AuditEvent.objects.count() == 0


def test_it_keeps_secrets_out_of_results_and_the_database_file(
    mcp: McpHarness, make_host, sshd: SshServer
) -> None:
    make_host("pw")
    make_host("key", auth="ed25519")
    seen: list[str] = []
    for name in ("pw", "key"):
        for tool, args in [
            ("ssh_connect", {"host": name}),
            ("ssh_execute", {"host": name, "command": "echo hi"}),
            ("ssh_list_files", {"host": name}),
            ("ssh_status", {}),
            ("ssh_list_hosts", {}),
        ]:
            result = mcp.call(tool, **args)
            seen.append(result.model_dump_json())
    # A command that prints the password (without naming it) has it redacted from its output.
    octal = "".join(f"\\{ord(c):03o}" for c in sshd.password)
    echoed = mcp.ok("ssh_execute", host="pw", command=f"printf '{octal}'")
    assert echoed["stdout"] == "[REDACTED]"
    seen.append(json.dumps(echoed))
    blob = "\n".join(seen)
    key_body = sshd.private_key_text("ed25519").splitlines()[1]
    assert sshd.password not in blob and key_body not in blob
    # Every row of every table, as the database returns it...
    from django.db import connection

    with connection.cursor() as cursor:
        dumped = []
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - our own tables
            dumped.append(repr(cursor.fetchall()))
    assert sshd.password not in "".join(dumped) and key_body not in "".join(dumped)
    # ...and, on SQLite, the raw bytes of the database file and its write-ahead log.
    if connection.vendor == "sqlite":
        raw = raw_sqlite_bytes(str(connection.settings_dict["NAME"]))
        assert sshd.password.encode() not in raw
        assert key_body.encode() not in raw


def test_it_describes_every_tool_with_a_schema_and_hints(mcp: McpHarness) -> None:
    listed = {t.name: t for t in mcp.run(mcp.client.list_tools()).tools}
    read_only = {"ssh_list_hosts", "ssh_status", "ssh_download_file", "ssh_download_many", "ssh_list_files"}
    read_only |= {"ssh_job_status", "ssh_list_jobs", "ssh_read_output"}
    acting = {
        "ssh_connect",
        "ssh_execute",
        "ssh_execute_many",
        "ssh_upload_file",
        "ssh_upload_many",
        "ssh_disconnect",
        "ssh_approval_status",
        "ssh_copy",
        "ssh_copy_many",
    }
    acting |= {"ssh_start_job", "ssh_cancel_job"}
    assert set(listed) == read_only | acting
    for name, tool in listed.items():
        assert tool.description and len(tool.description) > 60, name
        assert tool.output_schema and tool.output_schema.get("properties"), name
        assert tool.annotations is not None and tool.annotations.read_only_hint == (name in read_only), name
    assert listed["ssh_execute"].annotations.destructive_hint is True  # type: ignore[union-attr]
    # Arguments the caller can never use are not offered: ad-hoc connection fields (off by
    # default) and sudo (the local client's grant has none; see test_visibility).
    assert "password" not in listed["ssh_connect"].input_schema["properties"]
    assert "sudo" not in listed["ssh_execute"].input_schema["properties"]
    assert "sudo" not in listed["ssh_start_job"].input_schema["properties"]
