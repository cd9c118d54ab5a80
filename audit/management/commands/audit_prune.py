"""Delete finished audit rows older than a number of days, keeping the chain verifiable."""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import head_anchors
from audit.models import AuditAnchor
from audit.prune import ChainBrokenError, prune


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not 0 <= days < 1e6:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days (0 or more)")
    return days


class Command(BaseCommand):
    help = (
        "Delete finished audit rows that finished more than DAYS days ago: the oldest part of the "
        "hash chain, up to the first newer row. An anchor row records where the chain now starts, "
        "who pruned and how many rows went. Running rows are never deleted; a broken chain is "
        "never pruned."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=_days, required=True, metavar="DAYS", help="Age in days (fractions allowed)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Report what would be deleted.")
        parser.add_argument(
            "--actor", default=None, help="Who is pruning, for the anchor row (default: the OS user)."
        )
        parser.add_argument(
            "--anchor-file",
            default=None,
            help="Head anchor file to record the last deleted row in, so audit_verify --anchors can"
            " tell this prune from a forged one (default: SSHCONTROL_AUDIT_ANCHOR_FILE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = options["actor"] or getpass.getuser()
        try:
            pruned = prune(
                older_than=timedelta(days=options["older_than"]),
                pruned_by=actor,
                dry_run=options["dry_run"],
            )
        except ChainBrokenError as exc:
            raise CommandError(
                f"refusing to prune: the audit chain is broken at {exc}; run audit_verify", returncode=1
            ) from exc
        cutoff = pruned.cutoff.isoformat(timespec="seconds")
        if not pruned.count:
            self.stdout.write(f"Nothing to prune: no chained rows finished before {cutoff}.")
            return
        span = f"chain_seq {pruned.first_seq}..{pruned.last_seq}"
        if options["dry_run"]:
            self.stdout.write(f"Would delete {pruned.count} audit rows finished before {cutoff} ({span}).")
            return
        self.stdout.write(
            f"Deleted {pruned.count} audit rows finished before {cutoff} ({span}); "
            f"the chain now starts at chain_seq {(pruned.last_seq or 0) + 1} (anchor #{pruned.anchor_id})."
        )
        path = options["anchor_file"] or settings.AUDIT_ANCHOR_FILE
        if path and pruned.last_seq is not None and pruned.anchor_id is not None:
            last_hash = (
                AuditAnchor.objects.filter(pk=pruned.anchor_id).values_list("prev_hash", flat=True).get()
            )
            anchor = head_anchors.HeadAnchor(
                pruned.last_seq, last_hash, datetime.now(UTC).replace(microsecond=0)
            )
            try:
                head_anchors.append_to_file(Path(path), anchor)
            except head_anchors.AnchorError as exc:
                raise CommandError(
                    f"pruned, but the last deleted row was not anchored ({exc}); append this line to the"
                    f" anchor file: {anchor.line().strip()}",
                    returncode=1,
                ) from None
            self.stdout.write(f"Anchored the last deleted row in {path}: {anchor}")
