"""``sshcontrol import_hosts``: register hosts from an OpenSSH client config or an Ansible inventory.

Existing hosts are skipped unless ``--update`` is given. Key files and inventory
passwords are secrets: they are stored (encrypted) only with ``--import-keys`` /
``--import-passwords``, and reported as ignored otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosts.importers import InventoryError, ParsedSource
from hosts.importers.ansible import read_inventory
from hosts.importers.apply import SKIPPED, ImportOptions, ImportReport, apply_import
from hosts.importers.ssh_config import read_ssh_config
from hosts.management.arguments import int_argument
from hosts.models import Credential

_positive = int_argument("expected a positive number")


class Command(BaseCommand):
    help = (
        "Import hosts from an OpenSSH client config (--ssh-config) or an Ansible inventory "
        "(--ansible-inventory, INI or YAML), with a per-host report. Try --dry-run first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--ssh-config", metavar="PATH", help="An ssh_config file, e.g. ~/.ssh/config (Include followed)."
        )
        source.add_argument("--ansible-inventory", metavar="PATH", help="An Ansible inventory, INI or YAML.")
        parser.add_argument(
            "--format",
            choices=("auto", "ini", "yaml"),
            default="auto",
            help="Format of the Ansible inventory (default: by extension, else by content).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Report what would happen; write nothing.")
        parser.add_argument(
            "--update", action="store_true", help="Update hosts that already exist (default: skip them)."
        )
        parser.add_argument(
            "--credential", metavar="NAME", help="Attach this existing credential to every host."
        )
        parser.add_argument(
            "--import-keys",
            action="store_true",
            help="Read IdentityFile / ansible_ssh_private_key_file and store each key as an encrypted "
            "credential (passphrase-protected keys are skipped and reported).",
        )
        parser.add_argument(
            "--import-passwords",
            action="store_true",
            help="Store ansible_password / ansible_ssh_pass as encrypted credentials "
            "(without this flag they are ignored).",
        )
        parser.add_argument(
            "--default-user", default="", metavar="USER", help="User for hosts whose source names none."
        )
        parser.add_argument(
            "--tag", action="append", default=[], dest="tags", help="Add this tag to every imported host."
        )
        parser.add_argument(
            "--progress-every",
            type=_positive,
            default=100,
            metavar="N",
            help="Print progress to stderr every N hosts (default 100).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        credential = None
        if options["credential"]:
            try:
                credential = Credential.objects.get(name=options["credential"])
            except Credential.DoesNotExist:
                raise CommandError(f"no credential named '{options['credential']}'") from None
        try:
            parsed = self._read(options)
        except InventoryError as exc:
            raise CommandError(str(exc)) from None
        total = len(parsed.candidates)

        def progress(done: int, of: int) -> None:
            # Plain text: stderr's default style is the error colour, and this is no error.
            self.stderr.write(f"{done}/{of} hosts processed", style_func=str)

        report = apply_import(
            parsed,
            ImportOptions(
                dry_run=options["dry_run"],
                update=options["update"],
                credential=credential,
                import_keys=options["import_keys"],
                import_passwords=options["import_passwords"],
                default_user=options["default_user"].strip(),
                tags=tuple(dict.fromkeys(t.strip() for t in options["tags"] if t.strip())),
                progress_every=options["progress_every"],
                # A handful of hosts needs no progress line.
                progress=progress if total > options["progress_every"] else None,
            ),
        )
        self._print(report)

    def _read(self, options: dict[str, Any]) -> ParsedSource:
        if options["ssh_config"]:
            return read_ssh_config(Path(options["ssh_config"]))
        return read_inventory(Path(options["ansible_inventory"]), options["format"])

    def _print(self, report: ImportReport) -> None:
        for note in report.notes:
            self.stdout.write(f"note: {note}")
        width = max((len(row.name) for row in report.rows), default=0)
        for row in report.rows:
            outcome = row.outcome
            if report.dry_run and outcome != SKIPPED:
                outcome = f"would be {outcome}" if outcome != "unchanged" else outcome
            line = f"{outcome:<16} {row.name.ljust(width)}  {row.detail}"
            self.stdout.write(line.rstrip())
            for note in row.notes:
                self.stdout.write(f"{'':<16} {'':<{width}}  - {note}")
        self.stdout.write(report.summary())
