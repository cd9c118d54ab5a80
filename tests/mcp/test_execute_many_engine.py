"""ssh_execute_many on the libssh2 batch engine (SSHCONTROL_BATCH_ENGINE_LIBSSH2, embedded)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
import pytest
from prometheus_client import generate_latest

from audit.models import AuditEvent
from hosts import specs
from hosts.models import Credential, Host, HostKey
from sshcontrol import fleet_engine, metrics
from sshcontrol.models import RemoteCommand, SshSession
from sshlib import c_batch
from tests.hostkeys import trust
from tests.mcp.conftest import McpHarness
from tests.mcp.held_batch import (
    UNREACHABLE,
    HeldCommand,
    completed,
    hosts_and_one_unreachable,
    process_groups_recorded,
)
from tests.polling import wait_until
from tests.sshd import SshServer


@pytest.fixture(autouse=True)
def on_engine(settings: Any) -> Iterator[None]:
    settings.BATCH_ENGINE_LIBSSH2 = True
    yield
    c_batch.engine().close_all()


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["host"]: r["status"] for r in result["results"]}


def rows(result: dict[str, Any]) -> dict[str, AuditEvent]:
    return {r.host_name: r for r in AuditEvent.objects.filter(batch_id=result["batch_id"])}


def test_it_runs_on_the_engine_and_reuses_its_connections(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    made = [make_host(f"eng{i}") for i in range(4)]
    names = [h.name for h in made]
    before = c_batch.engine().connections_opened
    first = mcp.ok("ssh_execute_many", hosts=names, command="echo same; echo err >&2; exit 3")
    assert set(statuses(first).values()) == {"failed"}
    assert all(r["exit_status"] == 3 and r["stdout"] == "same\n" for r in first["results"])
    assert first["groups"][0]["stderr"] == "err\n"
    written = rows(first)
    assert all(r.status == AuditEvent.Status.OK and r.exit_status == 3 for r in written.values())
    assert all(r.details["ssh_engine"] == "libssh2" and r.chain_hash for r in written.values())
    assert not SshSession.objects.exists()  # the engine's connections are not sessions
    assert c_batch.engine().connections_opened - before == 4
    # As for a session: the row names the key the host proved, the host list when it was reached.
    for host in made:
        trusted = set(
            host.host_keys.filter(state=HostKey.State.TRUSTED).values_list("fingerprint", flat=True)
        )
        assert written[host.name].details["host_key_fingerprint"] in trusted
    reached = dict(Host.objects.filter(pk__in=[h.pk for h in made]).values_list("name", "last_connected_at"))
    assert all(reached.values()), reached
    second = mcp.ok("ssh_execute_many", hosts=names, command="echo again")
    assert set(statuses(second).values()) == {"ok"}
    assert c_batch.engine().connections_opened - before == 4  # warm: none opened
    assert all(r.details["host_key_fingerprint"] for r in rows(second).values())
    # Reused connections reached no host anew.
    again = dict(Host.objects.filter(pk__in=[h.pk for h in made]).values_list("name", "last_connected_at"))
    assert again == reached
    # Not sessions, but not hidden either: /metrics counts them.
    scraped = generate_latest(metrics.REGISTRY).decode()
    assert "sshcontrol_batch_connections 4.0" in scraped, scraped


def test_a_disabled_host_is_refused_and_never_reached(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    make_host("on")
    make_host("off", enabled=False)
    before = c_batch.engine().connections_opened
    result = mcp.ok("ssh_execute_many", hosts=["on", "off"], command="true")
    assert statuses(result) == {"on": "ok", "off": "refused"}
    assert c_batch.engine().connections_opened - before == 1
    assert Host.objects.get(name="off").last_connected_at is None


def test_a_changed_or_revoked_key_refuses_the_host_at_the_next_batch(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    made = [make_host(f"key{i}") for i in range(3)]
    names = [h.name for h in made]
    assert set(statuses(mcp.ok("ssh_execute_many", hosts=names, command="true")).values()) == {"ok"}
    # The connections are pooled and warm; an administrator now replaces one key and revokes another.
    made[1].host_keys.all().delete()
    trust(made[1], paramiko.RSAKey.generate(2048), approved_by="test")
    made[2].host_keys.update(state=HostKey.State.REVOKED)
    result = mcp.ok("ssh_execute_many", hosts=names, command="echo hi")
    assert statuses(result) == {"key0": "ok", "key1": "error", "key2": "error"}
    errors = {r["host"]: r["error"] for r in result["results"]}
    assert "HOST KEY CHANGED for 'key1'" in errors["key1"]
    assert "unknown host key" in errors["key2"]
    assert made[1].host_keys.filter(state=HostKey.State.PENDING).count() == 1
    written = rows(result)
    assert written["key1"].status == AuditEvent.Status.ERROR
    assert "HOST KEY CHANGED" in written["key1"].error


def test_a_changed_credential_is_used_at_the_next_batch(
    mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer
) -> None:
    host = make_host("cred0")
    assert statuses(mcp.ok("ssh_execute_many", hosts=["cred0"], command="true")) == {"cred0": "ok"}
    credential = Credential.objects.get(hosts=host)
    credential.set_secret("not the password 42")
    credential.save()
    result = mcp.ok("ssh_execute_many", hosts=["cred0"], command="true")
    assert statuses(result) == {"cred0": "error"}
    assert result["results"][0]["error"] == f"authentication failed for user {sshd.user}"
    assert "not the password 42" not in str(result)


def test_rows_are_open_while_commands_run_and_process_groups_are_recorded(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    running, names = hosts_and_one_unreachable(make_host, "wbe", 4)
    held = HeldCommand()
    command = held.text
    call = mcp.submit("ssh_execute_many", hosts=names, command=command)
    try:
        held.wait_started(len(running))
        opened = {r.host_name: r for r in AuditEvent.objects.filter(tool="ssh_execute_many", command=command)}
        assert set(opened) == set(names)
        for host in running:
            assert opened[host.name].status == AuditEvent.Status.RUNNING
        recorded = process_groups_recorded(len(running))
        assert recorded == {opened[h.name].pk: h.pk for h in running}
        closed = completed(
            opened[UNREACHABLE].pk, "the unreachable host's row completed while the others run"
        )
        assert closed is not None and closed.status == AuditEvent.Status.ERROR
        assert "refused" in closed.error
    finally:
        held.release()
        try:
            result = call.result(60)
        finally:
            held.remove_files()
    assert result.structured_content is not None
    summary = result.structured_content["summary"]
    assert (summary["ok"], summary["error"]) == (4, 1)
    wait_until(lambda: not RemoteCommand.objects.exists(), 15, "the process group rows forgotten")


def test_cancelling_the_call_kills_the_commands(
    mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer
) -> None:
    made = [make_host(f"can{i}") for i in range(3)]
    marker = f"sleep 340{uuid.uuid4().int % 1000}"
    call = mcp.submit("ssh_execute_many", hosts=[h.name for h in made], command=marker, timeout=60)
    wait_until(lambda: len(sshd.user_processes(f"^{marker}")) == 3, 30, "every command started")
    call.cancel()
    wait_until(lambda: not sshd.user_processes(marker), 15, "the cancelled commands killed")
    done = wait_until(
        lambda: (
            list(found)
            if len(found := AuditEvent.objects.filter(command=marker).exclude(status="running")) == 3
            else None
        ),
        30,
        "the rows completed",
    )
    assert done is not None
    assert {r.status for r in done} == {AuditEvent.Status.INTERRUPTED}


def test_stop_after_failures_and_timeouts_hold_on_the_engine(
    mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer
) -> None:
    made = [make_host(f"stop{i}") for i in range(4)]
    result = mcp.ok(
        "ssh_execute_many",
        hosts=[h.name for h in made],
        command="exit 1",
        batch_size=2,
        stop_after_failures=1,
    )
    assert [r["status"] for r in result["results"]] == ["failed", "failed", "skipped", "skipped"]
    assert result["stopped_early"] is True
    marker = f"sleep 350{uuid.uuid4().int % 1000}"
    timed = mcp.ok("ssh_execute_many", hosts=[made[0].name], command=marker, timeout=1)
    assert statuses(timed) == {made[0].name: "timed_out"}
    assert rows(timed)[made[0].name].status == AuditEvent.Status.TIMEOUT
    wait_until(lambda: not sshd.user_processes(marker), 10, "the timed-out command killed")


def test_hosts_the_engine_cannot_take_go_the_paramiko_way(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    make_host("direct")
    make_host("tofu", trusted=False, trust_on_first_use=True)
    result = mcp.ok("ssh_execute_many", hosts=["direct", "tofu"], command="echo hi")
    assert statuses(result) == {"direct": "ok", "tofu": "ok"}
    written = rows(result)
    assert written["direct"].details.get("ssh_engine") == "libssh2"
    assert "ssh_engine" not in written["tofu"].details
    assert list(SshSession.objects.values_list("host_name", flat=True)) == ["tofu"]


def test_a_warm_batch_reuses_the_hosts_specs_until_they_change_or_their_connection_goes(
    mcp: McpHarness, make_host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []

    def counting(host: Host, *args: Any) -> Any:
        built.append(host.name)
        return specs.build_spec(host, *args)

    monkeypatch.setattr(fleet_engine, "build_spec", counting)
    made = [make_host(f"spec{i}") for i in range(2)]
    names = [h.name for h in made]
    opened = c_batch.engine().connections_opened
    assert set(statuses(mcp.ok("ssh_execute_many", hosts=names, command="true")).values()) == {"ok"}
    assert sorted(built) == names
    # Warm: the kept specs (no credential decrypted again), the pooled connections.
    assert set(statuses(mcp.ok("ssh_execute_many", hosts=names, command="true")).values()) == {"ok"}
    assert sorted(built) == names
    # The same secret stored anew is a new ciphertext: that host's spec is built again (and,
    # equal to the old one, keeps its connection).
    credential = Credential.objects.get(hosts=made[0])
    credential.set_secret(credential.secret())
    credential.save()
    assert set(statuses(mcp.ok("ssh_execute_many", hosts=names, command="true")).values()) == {"ok"}
    assert sorted(built) == sorted([*names, "spec0"])
    assert c_batch.engine().connections_opened == opened + 2
    # A spec (and the secrets in it) goes with its connection.
    [key] = [k for k in fleet_engine.specs.kept_keys() if k[1] == made[1].pk]
    c_batch.engine().close(key)
    assert key not in fleet_engine.specs.kept_keys()
    assert set(statuses(mcp.ok("ssh_execute_many", hosts=names, command="true")).values()) == {"ok"}
    assert built[-1] == "spec1"
    assert c_batch.engine().connections_opened == opened + 3
