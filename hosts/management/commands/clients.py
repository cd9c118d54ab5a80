"""``sshcontrol clients``: MCP clients, their tokens and grants, from a shell.

A token is printed once, alone on stdout (so ``TOKEN=$(sshcontrol clients add bot)``
captures it), with a warning on stderr that it will not be shown again. Only its digest
is stored; ``list`` shows the first characters, which identify a token but do not make one.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from hosts import sudo_rule
from hosts.access_models import ClientGroup, CommandRule, Grant, McpClient
from hosts.clients import IssuedToken, create_client, issue_token, revoke
from hosts.management.arguments import int_argument
from hosts.models import Host
from hosts.validation import validation_message

# Rule options in the order their rules are stored (the order does not change the
# outcome: deny wins over approve, approve over allow).
RULE_OPTIONS = (
    ("deny", CommandRule.Action.DENY),
    ("approve", CommandRule.Action.APPROVE),
    ("allow", CommandRule.Action.ALLOW),
)


_positive_days = int_argument("a whole number of days", out_of_range="at least 1 day")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


class Command(BaseCommand):
    help = "Manage MCP clients: add, list, revoke, issue a new token, grant hosts."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        add = sub.add_parser("add", help="Make a client and print its token (once).")
        add.add_argument("name", help="Letters, digits, - and _; recorded on every audit row.")
        add.add_argument(
            "--owner", default="", help="Admin username responsible (cannot approve its requests)."
        )
        add.add_argument("--description", default="")
        add.add_argument(
            "--expires-in-days", type=_positive_days, metavar="N", help="The token stops working then."
        )
        add.add_argument(
            "--group", action="append", default=[], dest="groups", metavar="G", help="A client group; repeat."
        )

        listing = sub.add_parser("list", help="Show clients (never their tokens).")
        listing.add_argument("--json", action="store_true", help="Print a JSON array.")

        revoke_parser = sub.add_parser("revoke", help="Revoke a client: its token stops working for good.")
        revoke_parser.add_argument("name")

        token = sub.add_parser(
            "token", help="Issue a new token (the old one stops working) and print it once."
        )
        token.add_argument("name")

        grant = sub.add_parser("grant", help="Give a client hosts, permissions and command rules.")
        grant.add_argument("name")
        # --host and --tag combine (listed hosts plus tagged ones); --all-hosts stands alone.
        grant.add_argument("--all-hosts", action="store_true", help="Every host, present and future.")
        grant.add_argument(
            "--host", action="append", default=[], dest="hosts", metavar="H", help="A host by name; repeat."
        )
        grant.add_argument(
            "--tag",
            action="append",
            default=[],
            dest="tags",
            metavar="T",
            help="Hosts carrying this tag; repeat.",
        )
        grant.add_argument(
            "--execute",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Run commands, subject to the rules (default: yes).",
        )
        grant.add_argument("--read-files", action="store_true", help="Download files and list directories.")
        grant.add_argument("--write-files", action="store_true", help="Upload files.")
        grant.add_argument("--sudo", action="store_true", help="Run commands with sudo=true.")
        grant.add_argument(
            "--read-only",
            action="store_true",
            help="Commands only from this grant's allow rules and only if they cannot write; no uploads.",
        )
        grant.add_argument("--description", default="")
        for option, action in RULE_OPTIONS:
            grant.add_argument(
                f"--{option}",
                action="append",
                default=[],
                metavar="REGEX",
                help=f"A command rule: {action.label.lower()} commands matching REGEX; repeat.",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        handler = {
            "add": self.add_action,
            "list": self.list_action,
            "revoke": self.revoke_action,
            "token": self.token_action,
            "grant": self.grant_action,
        }[options["action"]]
        handler(options)

    # -- add / token -------------------------------------------------------------------

    def add_action(self, options: dict[str, Any]) -> None:
        name: str = options["name"]
        if McpClient.objects.filter(name=name).exists():
            raise CommandError(f"a client named '{name}' already exists (a new token: clients token {name})")
        owner: str = options["owner"]
        if owner and not get_user_model().objects.filter(username=owner).exists():
            raise CommandError(
                f"no admin user named '{owner}': --owner names the admin account responsible for the "
                "client (it cannot decide the client's approval requests). Create it first "
                "(sshcontrol createsuperuser) or leave --owner out."
            )
        groups = self._groups(options["groups"])
        days: int | None = options["expires_in_days"]
        expires_at = timezone.now() + timedelta(days=days) if days else None
        candidate = McpClient(name=name, owner=options["owner"], description=options["description"])
        try:
            candidate.full_clean(exclude=["expires_at"])
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None
        with transaction.atomic():
            issued = create_client(
                name, owner=options["owner"], description=options["description"], expires_at=expires_at
            )
            issued.client.groups.set(groups)
        self._print_token(issued, f"Created client '{name}'.")

    def token_action(self, options: dict[str, Any]) -> None:
        client = self._client(options["name"])
        refusal = client.token_refusal()
        if refusal:
            raise CommandError(refusal)
        issued = issue_token(client)
        self._print_token(issued, f"New token for '{client.name}'; the previous one no longer works.")

    def _print_token(self, issued: IssuedToken, what: str) -> None:
        # The token alone on stdout, the words on stderr: $(...) captures just the token.
        self.stderr.write(f"{what} Its token follows and will not be shown again: store it now.")
        self.stdout.write(issued.token)

    # -- list / revoke -----------------------------------------------------------------

    def list_action(self, options: dict[str, Any]) -> None:
        clients = list(McpClient.objects.order_by("name"))
        now = timezone.now()
        if options["json"]:
            self.stdout.write(json.dumps([self._as_dict(c, now) for c in clients], indent=2))
            return
        if not clients:
            self.stdout.write('No clients. Add one with "sshcontrol clients add NAME".')
            return
        rows = [("NAME", "OWNER", "STATE", "EXPIRES", "LAST USED", "TOKEN")]
        for c in clients:
            token = "(local, none)" if c.local_user else (f"{c.token_prefix}..." if c.token_prefix else "-")
            rows.append(
                (
                    c.name,
                    c.owner or "-",
                    c.state(now),
                    _when(c.expires_at),
                    _when(c.last_used_at),
                    token,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

    @staticmethod
    def _as_dict(client: McpClient, now: Any) -> dict[str, Any]:
        return {
            "name": client.name,
            "owner": client.owner,
            "description": client.description,
            "state": client.state(now),
            "local_user": client.local_user or None,
            "token_prefix": client.token_prefix or None,
            "expires_at": client.expires_at.isoformat() if client.expires_at else None,
            "last_used_at": client.last_used_at.isoformat() if client.last_used_at else None,
            "revoked_at": client.revoked_at.isoformat() if client.revoked_at else None,
        }

    def revoke_action(self, options: dict[str, Any]) -> None:
        client = self._client(options["name"])
        if client.revoked_at is not None:
            raise CommandError(f"client '{client.name}' was already revoked")
        revoke(client)
        self.stdout.write(f"Revoked client '{client.name}': its token no longer works.")

    # -- grant -------------------------------------------------------------------------

    def grant_action(self, options: dict[str, Any]) -> None:
        client = self._client(options["name"])
        tags = list(dict.fromkeys(t.strip() for t in options["tags"] if t.strip()))
        if options["all_hosts"] and (options["hosts"] or tags):
            raise CommandError("--all-hosts already covers every host; give it alone, or --host / --tag")
        if not (options["all_hosts"] or options["hosts"] or tags):
            raise CommandError("say which hosts: --all-hosts, or --host H and/or --tag T (repeatable)")
        hosts = self._hosts(options["hosts"])
        grant = Grant(
            client=client,
            description=options["description"],
            all_hosts=options["all_hosts"],
            tags=tags,
            can_execute=options["execute"],
            can_read_files=options["read_files"],
            can_write_files=options["write_files"],
            can_sudo=options["sudo"],
            read_only=options["read_only"],
        )
        with transaction.atomic():
            self._validate(grant, "grant")
            grant.save()
            grant.hosts.set(hosts)
            rules = []
            for option, action in RULE_OPTIONS:
                for pattern in options[option]:
                    rule = CommandRule(grant=grant, action=action, pattern=pattern)
                    self._validate(rule, f"--{option} {pattern!r}")
                    rule.save()
                    rules.append(rule)
        self.stdout.write(
            f"Granted client '{client.name}' {grant.permissions_text()} "
            f"on {grant.scope_text()} (grant #{grant.pk})."
        )
        for rule in rules:
            self.stdout.write(f"  {rule.get_action_display().lower()}: {rule.pattern}")
        for line in sudo_rule.warning_lines(sudo_rule.involving(sudo_rule.load_facts(), "grant", grant.pk)):
            self.stderr.write(f"Warning: {line} See {sudo_rule.DOC_POINTER}.")

    # -- helpers -----------------------------------------------------------------------

    def _client(self, name: str) -> McpClient:
        try:
            return McpClient.objects.get(name=name)
        except McpClient.DoesNotExist:
            raise CommandError(f"no client named '{name}' (see: sshcontrol clients list)") from None

    def _groups(self, names: list[str]) -> list[ClientGroup]:
        return _named(ClientGroup.objects.all(), names, "client group", "add it in the admin")

    def _hosts(self, names: list[str]) -> list[Host]:
        return _named(Host.objects.all(), names, "host", "see: sshcontrol hosts list")

    def _validate(self, obj: Grant | CommandRule, what: str) -> None:
        try:
            obj.full_clean()
        except ValidationError as exc:
            raise CommandError(f"{what}: {validation_message(exc)}") from None


_Named = TypeVar("_Named", ClientGroup, Host)


def _named(queryset: QuerySet[_Named], names: list[str], what: str, hint: str) -> list[_Named]:
    """The objects with these names; a CommandError naming every one that does not exist."""
    found = list(queryset.filter(name__in=names))
    missing = sorted(set(names) - {obj.name for obj in found})
    if missing:
        raise CommandError(f"no {what} named {', '.join(repr(n) for n in missing)} ({hint})")
    return found
