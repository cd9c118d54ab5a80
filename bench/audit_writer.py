"""Cost of the audit writer: begin/complete against a plain ORM create/update, in one run.

Runs against a throwaway SQLite database (the project's own settings: WAL, IMMEDIATE
transactions) or, with ``--database-url``, an existing PostgreSQL database, whose audit
tables it writes into. Prints the median and p95 of each, in milliseconds, and the
writer's ratio to the ORM.

    .venv/bin/python bench/audit_writer.py [--runs 2000] [--database-url postgres://...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(runs: int, once: Callable[[int], None]) -> list[float]:
    samples = []
    for index in range(runs):
        start = time.perf_counter()
        once(index)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--database-url", help="Use this database instead of a throwaway SQLite file.")
    args = parser.parse_args()

    os.environ.setdefault("SSHCONTROL_DATA_DIR", tempfile.mkdtemp(prefix="sshcontrol-bench-"))
    os.environ.setdefault("SSHCONTROL_FIELD_KEYS", "YmVuY2gta2V5LWZvci1zc2hjb250cm9sLWJlbmNoLTAxMjM=")
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from audit import writer
    from audit.models import AuditEvent

    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor}, {args.runs} runs each (after {args.runs // 10} warm-up runs)")

    def orm_create(_: int) -> None:
        event = AuditEvent.objects.create(  # the reference: what begin used to be
            request_id=uuid.uuid4(),
            started_at=timezone.now(),
            status=AuditEvent.Status.RUNNING,
            actor="bench",
            transport="stdio",
            tool="ssh_execute",
            command="true",
        )
        orm_ids.append(event.pk)

    def orm_update(index: int) -> None:
        AuditEvent.objects.filter(pk=orm_ids[index], status=AuditEvent.Status.RUNNING).update(
            status=AuditEvent.Status.OK, finished_at=timezone.now(), exit_status=0, stdout="", duration_ms=1.0
        )

    def begin(_: int) -> None:
        writer_ids.append(writer.begin(tool="ssh_execute", actor="bench", transport="stdio", command="true"))

    def complete(index: int) -> None:
        writer.complete(writer_ids[index], status="ok", exit_status=0, stdout="ok\n", details={"bench": 1})

    results: dict[str, list[float]] = {}
    for warmup in (True, False):
        orm_ids: list[int] = []
        writer_ids: list[int] = []
        runs = args.runs // 10 if warmup else args.runs
        # Interleaved in blocks so drift on the machine touches both sides alike.
        for name, once in (
            ("ORM create", orm_create),
            ("writer.begin", begin),
            ("ORM update", orm_update),
            ("writer.complete", complete),
        ):
            samples = timed(runs, once)
            if not warmup:
                results[name] = samples

    for name, samples in results.items():
        p50, p95 = percentiles(samples)
        print(f"{name:<18} median {p50:.3f} ms   p95 {p95:.3f} ms")
    begin_ratio = statistics.median(results["writer.begin"]) / statistics.median(results["ORM create"])
    complete_ratio = statistics.median(results["writer.complete"]) / statistics.median(results["ORM update"])
    print(f"begin / ORM create: {begin_ratio:.2f}x")
    print(f"complete (with hash chain) / ORM update: {complete_ratio:.2f}x")


if __name__ == "__main__":
    main()
