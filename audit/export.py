"""The audit log as JSON lines or CSV: one serialisation for ``audit_export`` and the admin.

Every stored column, oldest first, read with a server-side iterator so an export of
millions of rows holds one chunk in memory; each function yields text a line at a time,
for a file or a streaming HTTP response alike. Rows are redacted when they are written,
so an export contains no more than the admin shows.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from django.db.models import QuerySet

from audit.models import AuditEvent

CHUNK_SIZE = 2000

# Every stored field; the host is given as its id plus the name and address copied at the time.
COLUMNS: tuple[str, ...] = tuple(field.attname for field in AuditEvent._meta.concrete_fields)

FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def plain(value: Any) -> Any:
    """A JSON-serialisable form of a stored value: times in ISO 8601, ids as strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(plain(value))


def rows(events: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    """Every column of ``events``, oldest (lowest id) first, whatever order the queryset had."""
    values: Iterator[dict[str, Any]] = events.order_by("id").values(*COLUMNS).iterator(chunk_size=CHUNK_SIZE)
    return values


def jsonl_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    for row in rows(events):
        yield json.dumps({key: plain(value) for key, value in row.items()}) + "\n"


def csv_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    """A header line, then one line per row (RFC 4180: CRLF line ends, quoted where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield take()
    for row in rows(events):
        writer.writerow([csv_cell(row[column]) for column in COLUMNS])
        yield take()


def lines(events: QuerySet[AuditEvent], fmt: str) -> Iterator[str]:
    """The export of ``events`` in ``fmt`` (a key of FORMATS), a line at a time."""
    if fmt == "jsonl":
        return jsonl_lines(events)
    if fmt == "csv":
        return csv_lines(events)
    raise ValueError(f"unknown export format {fmt!r} (expected one of {sorted(FORMATS)})")
