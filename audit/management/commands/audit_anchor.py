"""Write the audit chain's head outside the database: once, or every N seconds until stopped."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from audit import chain, head_anchors
from audit.head_anchors import AnchorError, HeadAnchor


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain and write its head (sequence number, hash, time) to an append-only "
        "file and/or syslog, where whoever can write the database cannot rewrite it. "
        "'audit_verify --anchors FILE' later checks the chain still holds every anchored head."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--file",
            default="",
            help="Anchor file to append to (default: SSHCONTROL_AUDIT_ANCHOR_FILE).",
        )
        parser.add_argument("--syslog", action="store_true", help="Also send each anchor to syslog.")
        parser.add_argument(
            "--syslog-address",
            default=head_anchors.DEFAULT_SYSLOG_ADDRESS,
            help="The syslog socket (default %(default)s).",
        )
        parser.add_argument(
            "--every",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Keep running: anchor the head whenever it moved, checking every SECONDS, until "
            "SIGTERM or SIGINT.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        raw_path = options["file"] or settings.AUDIT_ANCHOR_FILE
        self.path = Path(raw_path).expanduser() if raw_path else None
        self.syslog_address: str | None = options["syslog_address"] if options["syslog"] else None
        if self.path is None and self.syslog_address is None:
            raise CommandError(
                "nowhere to anchor: give --file, set SSHCONTROL_AUDIT_ANCHOR_FILE, or --syslog"
            )
        every: float | None = options["every"]
        if every is None:
            self.once()
        elif every <= 0:
            raise CommandError("--every needs a positive number of seconds")
        else:
            self.loop(every)

    def once(self) -> None:
        verification = chain.verify()
        if verification.broken is not None:
            raise CommandError(
                f"not anchored: the audit chain is BROKEN at {verification.broken}", returncode=1
            )
        anchor = head_anchors.head_of(verification)
        if anchor is None:
            self.stdout.write("nothing to anchor: no row is on the chain yet")
            return
        try:
            self.write(anchor)
        except AnchorError as exc:
            raise CommandError(str(exc), returncode=1) from None

    def write(self, anchor: HeadAnchor) -> None:
        if self.path is not None:
            head_anchors.append_to_file(self.path, anchor)
        if self.syslog_address is not None:
            head_anchors.send_to_syslog(anchor, self.syslog_address)
        places = [str(self.path)] if self.path is not None else []
        if self.syslog_address is not None:
            places.append(f"syslog {self.syslog_address}")
        self.stdout.write(f"anchored {anchor} to {' and '.join(places)}")

    def loop(self, every: float) -> None:
        """Anchor each new head; a problem (broken chain, unwritable file) is reported and retried."""
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        last: chain.Verification | None = None
        written: tuple[int, str] | None = None
        reported = ""
        try:
            while not stop.is_set():
                close_old_connections()  # a long-lived command outlives database restarts
                problem = ""
                anchor = None
                try:
                    # Only rows chained since the last good walk are hashed again.
                    verification = chain.verify(resume=last)
                except DatabaseError as exc:
                    problem, last = f"not anchored: cannot read the audit chain: {exc}", None
                else:
                    anchor = head_anchors.head_of(verification)
                    if verification.broken is not None:
                        problem = f"not anchored: the audit chain is BROKEN at {verification.broken}"
                        last = None
                    else:
                        last = verification
                if anchor is not None and (anchor.seq, anchor.hash) != written:
                    try:
                        self.write(anchor)
                        written = (anchor.seq, anchor.hash)
                    except AnchorError as exc:
                        problem = str(exc)
                if problem and problem != reported:
                    self.stderr.write(problem)
                reported = problem
                stop.wait(every)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("stopped")
