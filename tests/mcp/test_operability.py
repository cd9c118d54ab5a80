"""What an operator watches: /metrics, /healthz, /readyz, one log line per call, no secrets in logs.

A real ``mcp_serve --transport streamable-http`` (JSON logs at DEBUG, a metrics token, the
TLS-proxy settings on) serves real tool calls against the suite's sshd, with a password
credential and sudo; the tests then scrape its metrics and read its log.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from hosts.models import CommandRule, Grant, Host, HostKey
from tests.mcp.test_http import RunningServer, issue, mcp_client, start_server, stop_server
from tests.sshd import SshServer

METRICS_TOKEN = "scrape-" + secrets.token_urlsafe(16)
# Markers no log line or metric may carry: a command's text, the stdin it is given and the
# output it prints (the stdin reversed, so the output is text the call never sent).
COMMAND_MARK = "cmdmark" + secrets.token_hex(6)
STDIN_MARK = "stdinmark" + secrets.token_hex(6)
MARKED = {"host": "ops-web", "command": f"rev # {COMMAND_MARK}", "stdin": STDIN_MARK + "\n"}


@pytest.fixture(scope="module")
def ops_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    proc, running = start_server(
        tmp_path_factory.mktemp("ops"),
        SSHCONTROL_METRICS_TOKEN=METRICS_TOKEN,
        SSHCONTROL_LOG_FORMAT="json",
        SSHCONTROL_LOG_LEVEL="DEBUG",
        SSHCONTROL_SSL_REDIRECT="true",
        SSHCONTROL_SECURE_COOKIES="true",
        SSHCONTROL_APPROVAL_WAIT_SECONDS="0",
    )
    yield running
    stop_server(proc, running)


def scrape(server: RunningServer, **headers: str) -> httpx2.Response:
    return httpx2.get(f"{server.url}/metrics", headers=headers, timeout=30)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def log_entries(server: RunningServer) -> list[dict[str, Any]]:
    entries = []
    for line in server.log.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


@pytest.fixture
def calls_made(
    ops_server: RunningServer, transactional_db: None, make_host: Any, sshd: SshServer, sudoers: None
) -> dict[str, Any]:
    """Real calls as a token client: a command, one with sudo (password credential), a denied one."""
    web: Host = make_host("ops-web")
    credential = web.credential
    assert credential is not None
    credential.set_sudo_password(sshd.password)
    credential.save()
    other: Host = make_host("ops-other")
    HostKey.objects.create(host=other, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:new")
    issued = issue("ops-agent")
    grant = Grant.objects.create(client=issued.client, can_sudo=True)
    grant.hosts.set([web])
    CommandRule.objects.create(grant=grant, action="approve", pattern="^echo guarded")

    async def run() -> dict[str, Any]:
        async with mcp_client(ops_server, issued.token) as client:
            plain = await client.call_tool("ssh_execute", {"host": "ops-web", "command": "echo plain"})
            as_root = {"host": "ops-web", "command": "id -u", "sudo": True}
            root = await client.call_tool("ssh_execute", as_root)
            denied = await client.call_tool("ssh_execute", {"host": "ops-other", "command": "true"})
            held = await client.call_tool("ssh_execute", {"host": "ops-web", "command": "echo guarded"})
            fed = await client.call_tool("ssh_execute", MARKED)
        # The handshake era streams its results as server-sent events: the marked call again.
        async with mcp_client(ops_server, issued.token, "legacy") as client:
            streamed = await client.call_tool("ssh_execute", MARKED)
        return {
            "plain": plain,
            "root": root,
            "denied": denied,
            "held": held,
            "fed": fed,
            "streamed": streamed,
        }

    results = anyio.run(run)
    assert not results["plain"].is_error and not results["root"].is_error, results
    assert results["root"].structured_content["stdout"] == "0\n"
    assert results["denied"].is_error
    assert results["held"].structured_content["state"] == "pending"
    for marked in ("fed", "streamed"):
        assert results[marked].structured_content["stdout"] == STDIN_MARK[::-1] + "\n", results[marked]
    return {
        "ok_ids": [results[k].structured_content["audit_id"] for k in ("plain", "root")],
        "marked_ids": [results[k].structured_content["audit_id"] for k in ("fed", "streamed")],
        "sshd_port": sshd.port,
        "denied_id": AuditEvent.objects.get(host_name="ops-other", client="ops-agent").pk,
        "password": sshd.password,
    }


def test_it_counts_real_tool_calls_at_metrics(ops_server: RunningServer, calls_made: dict[str, Any]) -> None:
    response = scrape(ops_server, authorization=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert value(found, "sshcontrol_tool_calls_total", tool="ssh_execute", status="ok") >= 2
    assert value(found, "sshcontrol_tool_calls_total", tool="ssh_execute", status="denied") >= 1
    assert value(found, "sshcontrol_tool_call_duration_seconds_count", tool="ssh_execute") >= 3
    assert value(found, "sshcontrol_audit_write_seconds_count", phase="begin") >= 3
    assert value(found, "sshcontrol_audit_write_seconds_count", phase="complete") >= 3
    assert value(found, "sshcontrol_sessions", state="connected") >= 1
    assert value(found, "sshcontrol_sessions_held") >= 1  # embedded: this process holds it
    assert value(found, "sshcontrol_tool_calls_total", tool="ssh_execute", status="pending") >= 1
    assert value(found, "sshcontrol_approvals_pending") == 1
    assert value(found, "sshcontrol_host_keys_pending") == 1
    assert value(found, "process_cpu_seconds_total") > 0


def test_it_serves_metrics_only_to_allowed_hosts_with_the_token(ops_server: RunningServer) -> None:
    assert scrape(ops_server).status_code == 401
    assert scrape(ops_server, authorization="Bearer wrong").status_code == 401
    assert scrape(ops_server, authorization=f"Bearer {METRICS_TOKEN}", host="evil.example").status_code == 421
    refused = scrape(ops_server, authorization=f"Bearer {METRICS_TOKEN}", host="evil.example")
    assert "sshcontrol_" not in refused.text


def test_its_metrics_name_no_client_host_or_command(
    ops_server: RunningServer, calls_made: dict[str, Any]
) -> None:
    response = scrape(ops_server, authorization=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.text
    found = samples(response.text)
    # Control: the scrape comes after the calls and counts them (the marked one included).
    assert value(found, "sshcontrol_tool_calls_total", tool="ssh_execute", status="ok") >= 3
    # Labels are the documented kinds only (and the client library's own collectors')...
    label_names = {name for _, labels in found for name, _ in labels}
    documented = {"tool", "status", "phase", "task", "state", "outcome", "le"}
    assert label_names <= documented | {"implementation", "major", "minor", "patchlevel", "version"}
    # ...and nothing names the client, a host (by name or address) or a command.
    named = ["ops-agent", "ops-web", "ops-other", "127.0.0.1", f":{calls_made['sshd_port']}"]
    named += ["echo plain", "echo guarded", COMMAND_MARK, STDIN_MARK, STDIN_MARK[::-1]]
    assert [name for name in named if name in response.text] == []


def test_it_logs_one_line_per_tool_call(ops_server: RunningServer, calls_made: dict[str, Any]) -> None:
    lines = [e for e in log_entries(ops_server) if e["logger"] == "sshcontrol.calls"]
    by_audit = {e["audit_id"]: e for e in lines if e["audit_id"] is not None}
    for audit_id in calls_made["ok_ids"]:
        entry = by_audit[audit_id]
        assert (entry["client"], entry["tool"], entry["host"], entry["status"]) == (
            "ops-agent",
            "ssh_execute",
            "ops-web",
            "ok",
        )
        assert entry["level"] == "INFO" and entry["duration_ms"] > 0
        assert f"audit_id={audit_id}" in entry["message"]
    denied = by_audit[calls_made["denied_id"]]
    assert (denied["host"], denied["status"]) == ("ops-other", "denied")
    assert sum(1 for e in lines if e["audit_id"] in calls_made["ok_ids"]) == 2  # one line each


def test_it_never_logs_the_password_or_the_sudo_password(
    ops_server: RunningServer, calls_made: dict[str, Any]
) -> None:
    text = ops_server.log.read_text()
    # The server logs at DEBUG, so the check reads everything it would ever write.
    assert any(e["level"] == "DEBUG" for e in log_entries(ops_server))
    assert calls_made["password"] not in text


CALL_LINE = re.compile(
    r"tool call client=\S+ tool=\S+ host=\S* status=\S+ duration_ms=[0-9.]+ audit_id=(\d+|-)"
)


def test_it_never_logs_a_command_its_stdin_or_its_output(
    ops_server: RunningServer, calls_made: dict[str, Any]
) -> None:
    entries = log_entries(ops_server)
    # Control: the server logs at DEBUG and logged the marked calls.
    assert any(e["level"] == "DEBUG" for e in entries)
    calls = [e for e in entries if e["logger"] == "sshcontrol.calls"]
    assert [e["host"] for e in calls if e["audit_id"] in calls_made["marked_ids"]] == ["ops-web"] * 2
    # A call line holds names, ids and a status, in these fields and no others.
    fields = {
        "time",
        "level",
        "logger",
        "message",
        "client",
        "tool",
        "host",
        "status",
        "duration_ms",
        "audit_id",
    }
    for entry in calls:
        assert set(entry) == fields, entry
        assert CALL_LINE.fullmatch(entry["message"]), entry["message"]
    # No line at all, whatever its logger, has the command, the stdin or the output.
    text = ops_server.log.read_text()
    marks = [COMMAND_MARK, STDIN_MARK, STDIN_MARK[::-1], "echo plain", "echo guarded"]
    assert [mark for mark in marks if mark in text] == []


def test_it_answers_health_and_readiness(ops_server: RunningServer) -> None:
    health = httpx2.get(f"{ops_server.url}/healthz", timeout=10)
    assert (health.status_code, health.text) == (200, "ok\n")
    ready = httpx2.get(f"{ops_server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"database": "ok", "migrations": "ok", "broker": "not configured"},
    }


def test_it_redirects_the_admin_to_https_unless_the_proxy_says_https(ops_server: RunningServer) -> None:
    plain = httpx2.get(f"{ops_server.url}/admin/login/", timeout=10)
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://127.0.0.1:")
    # uvicorn believes X-Forwarded-Proto from a trusted proxy (SSHCONTROL_TRUSTED_PROXIES, loopback).
    proxied = httpx2.get(f"{ops_server.url}/admin/login/", headers={"x-forwarded-proto": "https"}, timeout=10)
    assert proxied.status_code == 200
    assert "secure" in proxied.headers["set-cookie"].lower()
    # Health checks and scrapes are never redirected.
    assert httpx2.get(f"{ops_server.url}/healthz", timeout=10).status_code == 200
    assert scrape(ops_server, authorization=f"Bearer {METRICS_TOKEN}").status_code == 200
