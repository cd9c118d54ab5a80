"""Clients, rules, approvals and sudo in distributed mode: mcp_serve per client, real workers.

Each client runs its own ``mcp_serve`` with its token (as Claude Desktop would); the command
runs on a worker, which decrypts the sudo password itself.
"""

from __future__ import annotations

from typing import Any

from mcp import Client

from audit.models import AuditEvent
from hosts import approvals
from hosts.clients import create_client
from hosts.models import CommandRule, Grant, Host
from sshcontrol.models import SshSession
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import ok, run
from tests.sshd import SshServer


def token_for(name: str, host: Host, rules: tuple[tuple[str, str], ...] = (), **grant: Any) -> str:
    issued = create_client(name)
    made = Grant.objects.create(client=issued.client, **grant)
    made.hosts.set([host])
    for action, pattern in rules:
        CommandRule.objects.create(grant=made, action=action, pattern=pattern)
    return issued.token


def test_it_runs_sudo_on_a_worker_and_keeps_clients_apart(
    workers: WorkerPool, make_host, sshd: SshServer, sudoers: None
) -> None:
    host = make_host("h")
    assert host.credential is not None
    host.credential.set_sudo_password(sshd.password)
    host.credential.save()
    admin_token = token_for("ops", host, can_sudo=True)

    async def as_ops(client: Client) -> tuple[str, str]:
        result = await ok(client, "ssh_execute", host="h", command="id -u", sudo=True)
        return result["session_id"], result["stdout"]

    session_id, stdout = run(as_ops, workers.broker_url, SSHCONTROL_CLIENT_TOKEN=admin_token)
    assert stdout == "0\n"
    assert SshSession.objects.get(session_id=session_id).worker in workers.names
    # Granted only now: while a client without sudo can run commands as the account, the sudo
    # password rule refuses sudo there (checked at the end; see tests/mcp/test_sudo_capture.py).
    viewer_token = token_for("viewer", host, rules=(("deny", r"^rm\b"),))

    async def as_viewer(client: Client) -> tuple[str, str, str]:
        theirs = await client.call_tool("ssh_execute", {"session_id": session_id, "command": "id"})
        sudo = await client.call_tool("ssh_execute", {"host": "h", "command": "id", "sudo": True})
        denied = await client.call_tool("ssh_execute", {"host": "h", "command": "rm -rf /tmp/x"})
        return tuple(r.content[0].text for r in (theirs, sudo, denied))  # type: ignore[return-value,union-attr]

    theirs, sudo, denied = run(as_viewer, workers.broker_url, SSHCONTROL_CLIENT_TOKEN=viewer_token)
    assert f"unknown session_id '{session_id}'" in theirs
    assert "may not use sudo" in sudo and "denied by rule" in denied

    async def as_ops_again(client: Client) -> str:
        result = await client.call_tool("ssh_execute", {"host": "h", "command": "id -u", "sudo": True})
        return result.content[0].text  # type: ignore[union-attr]

    refused = run(as_ops_again, workers.broker_url, SSHCONTROL_CLIENT_TOKEN=admin_token)
    assert "sudo is refused on host 'h'" in refused
    rows = AuditEvent.objects.order_by("id")
    assert [(r.client, r.status) for r in rows] == [
        ("ops", "ok"),
        ("viewer", "error"),
        ("viewer", "denied"),
        ("viewer", "denied"),
        ("ops", "denied"),
    ]
    assert sshd.password not in "".join(r.stdout + r.stderr + str(r.details) for r in rows)


def test_it_runs_an_approved_command_on_a_worker(workers: WorkerPool, make_host, sshd: SshServer) -> None:
    host = make_host("h")
    token = token_for("agent", host, rules=(("approve", r"^echo guarded"),))

    async def ask(client: Client) -> int:
        held = await ok(client, "ssh_execute", host="h", command="echo guarded run")
        assert held["state"] == "pending"
        request_id: int = held["pending_approval"]["request_id"]
        return request_id

    env = {"SSHCONTROL_CLIENT_TOKEN": token, "SSHCONTROL_APPROVAL_WAIT_SECONDS": "0"}
    request_id = run(ask, workers.broker_url, **env)
    approvals.decide(request_id, "bob", approve=True, comment="fine")

    async def pick_up(client: Client) -> dict[str, Any]:
        return await ok(client, "ssh_approval_status", request_id=request_id)

    status = run(pick_up, workers.broker_url, SSHCONTROL_CLIENT_TOKEN=token)
    assert status["state"] == "executed" and status["execution"]["stdout"] == "guarded run\n"
    ran = AuditEvent.objects.get(pk=status["execution"]["audit_id"])
    assert (ran.client, ran.status, ran.details["approved_by"]) == ("agent", "ok", "bob")
