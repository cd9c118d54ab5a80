"""Walk the audit hash chain from its start and report whether it holds."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit import chain


class Command(BaseCommand):
    help = (
        "Verify the audit log's hash chain: every finished row, in chain order, from the newest "
        "prune anchor to the head. Exits 1 at the first broken link, naming the row and the check."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        verification = chain.verify()
        start = verification.start
        since = f"anchor #{start.anchor_id}, chain_seq {start.seq}" if start.anchor_id else "the beginning"
        if verification.broken is not None:
            raise CommandError(
                f"audit chain BROKEN at {verification.broken} "
                f"({verification.checked} rows verified before it, from {since})",
                returncode=1,
            )
        last = (
            f"chain_seq {start.seq}..{verification.last_seq}, head {verification.last_hash}"
            if verification.checked
            else "no finished rows yet"
        )
        self.stdout.write(f"audit chain OK: {verification.checked} rows verified from {since} ({last})")
