"""Walk the audit hash chain from its start and report whether it holds (and holds every anchored head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import chain, head_anchors

# How many anchor problems are listed before "and N more".
_SHOWN = 10


class Command(BaseCommand):
    help = (
        "Verify the audit log's hash chain: every finished row, in chain order, from the newest "
        "prune anchor to the head. Exits 1 at the first broken link, naming the row and the check. "
        "With --anchors, also checks that the chain still holds every head 'audit_anchor' wrote."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchors",
            nargs="?",
            const="",
            default=None,
            metavar="FILE",
            help="Anchor file written by audit_anchor (without FILE: SSHCONTROL_AUDIT_ANCHOR_FILE).",
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
        if options["anchors"] is not None:
            self.check_anchors(options["anchors"] or settings.AUDIT_ANCHOR_FILE)

    def check_anchors(self, raw_path: str) -> None:
        if not raw_path:
            raise CommandError("--anchors needs a FILE (or SSHCONTROL_AUDIT_ANCHOR_FILE set)")
        path = Path(raw_path).expanduser()
        try:
            result = head_anchors.check(head_anchors.read_file(path))
        except head_anchors.AnchorError as exc:
            raise CommandError(f"anchors NOT checked: {exc}", returncode=1) from None
        pruned = (
            f"; {result.before_start} anchored before the newest prune, not checkable"
            if result.before_start
            else ""
        )
        if not result.ok:
            shown = "\n  ".join(result.problems[:_SHOWN])
            more = f"\n  and {len(result.problems) - _SHOWN} more" if len(result.problems) > _SHOWN else ""
            raise CommandError(
                f"audit chain does NOT hold {len(result.problems)} anchored head(s) from {path}"
                f" ({result.checked} held{pruned}):\n  {shown}{more}",
                returncode=1,
            )
        if not result.checked and not result.before_start:
            raise CommandError(f"anchors NOT checked: {path} holds no anchor", returncode=1)
        self.stdout.write(
            f"anchors OK: the chain holds all {result.checked} anchored heads in {path}{pruned}"
        )
