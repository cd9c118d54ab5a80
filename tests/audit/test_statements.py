"""Precompiled statements: the SQL is built once per database, values and results go through the fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from audit import writer
from audit.models import AuditEvent, ChainHead
from audit.statements import Insert, SelectForUpdate, Update, UpdateMany

pytestmark = pytest.mark.django_db


def test_it_compiles_once_per_database():
    statement = Insert(AuditEvent, ("request_id", "started_at", "status", "actor", "transport", "tool"))
    first = statement._for(connection)
    assert statement._for(connection) is first
    assert first.sql.startswith("INSERT INTO ")


def test_it_inserts_with_returning_and_binds_constants_once():
    params = ("request_id", "started_at", "actor", "details")
    defaults = {
        field.attname: field.get_default()
        for field in AuditEvent._meta.concrete_fields
        if not field.primary_key and field.attname not in params
    }
    statement = Insert(
        AuditEvent,
        params,
        returning=("id", "request_id", "started_at", "details", "stdout_truncated"),
        constants={
            **defaults,
            "status": "running",
            "transport": "stdio",
            "tool": "t",
            "stdout_truncated": True,
        },
    )
    request_id = uuid.uuid4()
    started = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    with connection.cursor() as cursor:
        row = statement.execute(cursor, [request_id, started, "claude", {"k": [1, "two"]}])
    assert row is not None
    # Returned values are converted as the ORM converts them.
    assert row["request_id"] == request_id
    assert row["started_at"] == started
    assert row["details"] == {"k": [1, "two"]}
    assert row["stdout_truncated"] is True
    stored = AuditEvent.objects.get(pk=row["id"])
    assert (stored.actor, stored.status, stored.transport, stored.stdout_truncated) == (
        "claude",
        "running",
        "stdio",
        True,
    )
    assert "RETURNING" in statement._for(connection).sql


def test_it_updates_with_a_where_clause_and_returns_nothing_when_no_row_matches():
    event_id = writer.begin(tool="t", actor="a", transport="stdio")
    statement = Update(
        AuditEvent, ("exit_status", "signal"), where=("id", "status"), returning=("exit_status",)
    )
    with connection.cursor() as cursor:
        assert statement.execute(cursor, [None, "", event_id, "ok"]) is None
        assert statement.execute(cursor, [3, "TERM", event_id, "running"]) == {"exit_status": 3}
        # A None is bound as a parameter, not baked into the cached SQL as NULL.
        assert statement.execute(cursor, [None, "", event_id, "running"]) == {"exit_status": None}
    assert AuditEvent.objects.values_list("exit_status", "signal").get(pk=event_id) == (None, "")


def test_it_updates_many_rows_in_one_statement_each_with_its_own_values():
    ids = [writer.begin(tool="t", actor="a", transport="stdio") for _ in range(3)]
    statement = UpdateMany(
        Update(
            AuditEvent,
            ("exit_status", "signal", "stdout_truncated"),
            where=("id", "status"),
            returning=("id", "exit_status"),
        )
    )
    with connection.cursor() as cursor:
        # A column of NULLs only (exit_status) is still typed as its column, on every backend.
        changed = statement.execute(
            cursor,
            [
                [None, "HUP", True, ids[0], "running"],
                [None, "", False, ids[1], "running"],
                [None, "never", True, ids[2], "ok"],  # not running: left alone
            ],
        )
        assert sorted(changed, key=lambda row: row["id"]) == [
            {"id": ids[0], "exit_status": None},
            {"id": ids[1], "exit_status": None},
        ]
        again = statement.execute(cursor, [[7, "", False, ids[2], "running"]])
    assert again == [{"id": ids[2], "exit_status": 7}]
    stored = AuditEvent.objects.filter(pk__in=ids).order_by("id")
    assert list(stored.values_list("exit_status", "signal", "stdout_truncated")) == [
        (None, "HUP", True),
        (None, "", False),
        (7, "", False),
    ]


def test_it_locks_where_the_backend_has_row_locks():
    sql = SelectForUpdate(ChainHead, ("id",), returning=("seq", "hash"))._for(connection).sql
    assert sql.endswith(" FOR UPDATE") == connection.features.has_select_for_update


def test_it_prepares_non_str_values_for_text_columns_through_the_field():
    from django.utils.functional import lazy

    lazy_actor = lazy(lambda: "lazy-actor", str)()
    statement = Update(AuditEvent, ("actor",), where=("id",))
    event_id = writer.begin(tool="t", actor="a", transport="stdio")
    with connection.cursor() as cursor:
        statement.execute(cursor, [lazy_actor, event_id])
    assert AuditEvent.objects.get(pk=event_id).actor == "lazy-actor"
