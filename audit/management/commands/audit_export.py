"""Export the audit log as JSON lines or CSV, streamed in id order (see ``audit.export``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from audit import export
from audit.models import AuditEvent


def parse_moment(value: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date or datetime; naive means UTC. A bare date is its midnight, or the next one.

    ``end_of_day`` makes ``--until 2026-01-31`` include that whole day, which is what a
    person typing a date means.
    """
    try:
        # A bare date first: parse_datetime would also read it, as midnight, losing end_of_day.
        day = parse_date(value)
        moment = parse_datetime(value) if day is None else None
    except ValueError as exc:
        # Well-formed but impossible values (month 13) raise rather than returning None.
        raise CommandError(f"{value!r} is not a valid ISO 8601 date or datetime: {exc}") from exc
    if day is not None:
        moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    if moment is None:
        raise CommandError(
            f"{value!r} is not an ISO 8601 date or datetime (e.g. 2026-01-31 or 2026-01-31T12:00)"
        )
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _StdoutAdapter:
    """A file-like writer onto the command's stdout that adds no line endings of its own."""

    def __init__(self, command: BaseCommand) -> None:
        self._command = command

    def write(self, text: str) -> int:
        self._command.stdout.write(text, ending="")
        return len(text)


class Command(BaseCommand):
    help = "Export audit events as JSON lines or CSV, oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, choices=tuple(export.FORMATS), dest="fmt")
        parser.add_argument(
            "--since", help="Events started at or after this ISO 8601 date or datetime (naive = UTC)."
        )
        parser.add_argument(
            "--until",
            help="Events started before this ISO 8601 datetime; a bare date includes that whole day.",
        )
        parser.add_argument("--host", help="Only events on the host of this name (as recorded at the time).")
        parser.add_argument("--status", choices=AuditEvent.Status.values)
        parser.add_argument("--batch", help="Only the rows of this batch (the batch_id of ssh_execute_many).")
        parser.add_argument("--output", help="Write to this file instead of standard output.")

    def handle(self, *args: Any, **options: Any) -> None:
        events = self._events(options)
        with self._open(options["output"]) as stream:
            for line in export.lines(events, options["fmt"]):
                stream.write(line)

    def _events(self, options: dict[str, Any]) -> QuerySet[AuditEvent]:
        events = AuditEvent.objects.order_by("id")
        if options["since"]:
            events = events.filter(started_at__gte=parse_moment(options["since"]))
        if options["until"]:
            events = events.filter(started_at__lt=parse_moment(options["until"], end_of_day=True))
        if options["host"]:
            events = events.filter(host_name=options["host"])
        if options["batch"]:
            events = events.filter(batch_id=options["batch"])
        if options["status"]:
            events = events.filter(status=options["status"])
        return events

    @contextmanager
    def _open(self, path: str | None) -> Iterator[IO[str] | _StdoutAdapter]:
        if not path or path == "-":
            yield _StdoutAdapter(self)
            return
        try:
            # Owner-only whatever the umask: the export holds commands and their output.
            # newline="" keeps the CSV's own line endings unchanged.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            handle = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
        with handle:
            yield handle
