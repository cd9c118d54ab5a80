"""The hash-chain migration puts the rows written before it on the chain."""

from __future__ import annotations

import ast
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit import chain
from audit.models import AuditEvent, ChainHead

BEFORE = [("audit", "0001_initial")]
AFTER = [("audit", "0002_hash_chain")]


@pytest.mark.django_db(transaction=True)
def test_it_chains_rows_written_before_the_chain_existed():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        OldEvent = executor.loader.project_state(BEFORE).apps.get_model("audit", "AuditEvent")
        start = datetime(2026, 1, 1, tzinfo=UTC)

        def old_event(status: str, finished_minutes: int | None) -> int:
            finished = start + timedelta(minutes=finished_minutes) if finished_minutes is not None else None
            event = OldEvent.objects.create(
                request_id=uuid.uuid4(),
                started_at=start,
                finished_at=finished,
                status=status,
                actor="claude",
                transport="stdio",
                tool="ssh_execute",
                command="uptime",
                details={"n": 1},
            )
            return int(event.pk)

        late = old_event("ok", 5)
        early = old_event("error", 1)
        running = old_event("running", None)

        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        # On to the latest schema: later columns (the client, 0003) are NULL on these rows,
        # and NULL columns are outside the hash, so the chain must still verify.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

        seqs = dict(AuditEvent.objects.values_list("id", "chain_seq"))
        assert seqs == {early: 1, late: 2, running: None}
        assert ChainHead.objects.get().seq == 2
        verification = chain.verify()
        assert verification.ok and verification.checked == 2
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


V1_STATE = [("audit", "0003_event_client")]


def _old_rows(executor: MigrationExecutor, hosts: list[int | None]) -> list[int]:
    """Rows written and chained by the code before format 2: one per host id (None: no host)."""
    executor.migrate(BEFORE)
    OldEvent = executor.loader.project_state(BEFORE).apps.get_model("audit", "AuditEvent")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for n, host_id in enumerate(hosts):
        event = OldEvent.objects.create(
            request_id=uuid.uuid4(),
            started_at=start,
            finished_at=start + timedelta(minutes=n + 1),
            status="ok",
            actor="claude",
            transport="stdio",
            tool="ssh_execute",
            host_id=host_id,
            host_name=f"host{host_id}" if host_id else "",
            host_address="10.0.0.1" if host_id else "",
            command=f"uptime {n}",
            stdout="up\n",
            details={"n": n},
        )
        ids.append(int(event.pk))
    executor = MigrationExecutor(connection)
    executor.migrate(V1_STATE)  # 0002 chains them with the version-1 formula
    return ids


def _delete_host_before_0004(executor: MigrationExecutor, host_id: int) -> None:
    """What deleting a host did before 0004: the database sets the rows' host link NULL."""
    apps = executor.loader.project_state(V1_STATE).apps
    apps.get_model("hosts", "Host").objects.filter(pk=host_id).delete()


def _to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_it_keeps_version_1_rows_verifiable_when_hosts_go():
    from audit import writer
    from hosts.models import Host

    kept, gone = (Host.objects.create(name=f"h{n}", address="10.0.0.1", username="u") for n in (1, 2))
    kept_id, gone_id = kept.pk, gone.pk
    executor = MigrationExecutor(connection)
    try:
        first, second, hostless = _old_rows(executor, [kept_id, gone_id, None])
        _delete_host_before_0004(MigrationExecutor(connection), gone_id)
        _to_latest()

        rows = {
            row["id"]: row for row in AuditEvent.objects.values("id", "host_id", "host_ref", "chain_version")
        }
        assert rows[first] == {"id": first, "host_id": kept_id, "host_ref": kept_id, "chain_version": 1}
        # The deleted host's id is back: the one id that reproduces the stored hash.
        assert rows[second] == {"id": second, "host_id": None, "host_ref": gone_id, "chain_version": 1}
        assert rows[hostless]["host_ref"] is None
        verification = chain.verify()
        assert verification.ok, str(verification.broken)

        # After the migration: deleting the other host, and new rows in format 2, keep it verifiable.
        Host.objects.filter(pk=kept_id).delete()
        fresh = Host.objects.create(name="h3", address="10.0.0.3", username="u")
        event_id = writer.begin(tool="ssh_execute", actor="claude", transport="stdio", host=fresh, stdin="x")
        writer.complete(event_id, status="ok", exit_status=0)
        fresh.delete()
        assert list(AuditEvent.objects.order_by("chain_seq").values_list("chain_version", flat=True)) == [
            1,
            1,
            1,
            2,
        ]
        verification = chain.verify()
        assert verification.ok and verification.checked == 4, str(verification.broken)
    finally:
        _to_latest()


@pytest.mark.django_db(transaction=True)
def test_it_does_not_launder_a_row_forged_before_the_migration():
    from hosts.models import Host

    gone = Host.objects.create(name="h1", address="10.0.0.1", username="u")
    executor = MigrationExecutor(connection)
    try:
        _good, forged = _old_rows(executor, [None, gone.pk])
        OldEvent = (
            MigrationExecutor(connection).loader.project_state(V1_STATE).apps.get_model("audit", "AuditEvent")
        )
        OldEvent.objects.filter(pk=forged).update(stdout="nothing to see\n")
        _delete_host_before_0004(MigrationExecutor(connection), gone.pk)
        _to_latest()

        # No host id reproduces the hash of changed content: the row stays as it was, and is reported.
        assert AuditEvent.objects.get(pk=forged).host_ref is None
        broken = chain.verify().broken
        assert broken is not None and (broken.event_id, broken.check) == (forged, "hash")
    finally:
        _to_latest()


# The project's own packages. A migration replays history: code it imports from them can
# change later and silently change what the migration writes, so it keeps frozen copies.
_LIVE_PACKAGES = {"audit", "hosts", "sshcontrol", "sshlib"}


def test_it_finds_no_migration_importing_the_projects_own_code():
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in sorted(root.glob("*/migrations/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            live = [name for name in names if name.split(".")[0] in _LIVE_PACKAGES]
            offenders += [f"{path.relative_to(root)}: {name}" for name in live]
    assert offenders == []
