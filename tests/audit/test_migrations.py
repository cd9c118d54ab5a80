"""The hash-chain migration puts the rows written before it on the chain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

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
                tool="run_command",
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
