"""``sshcontrol hosts``: register, list, scan, trust and remove hosts from a shell.

Secrets are never accepted on the command line, where ``ps`` and shell history would
keep them: a password or passphrase is read from stdin (``--password-stdin``,
``--passphrase-stdin``) and a private key from a file (``--key-file``).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from hosts import hostkeys
from hosts.keyfiles import MAX_KEY_FILE_BYTES, KeyFileError
from hosts.management.arguments import int_argument
from hosts.models import Credential, Host, HostKey
from hosts.validation import validation_message

_port = int_argument("port must be a number from 1 to 65535", maximum=65535)


def _read_stdin_line(what: str) -> str:
    """The first line of stdin, without its line ending; a prompt without echo on a terminal."""
    if sys.stdin is None:
        raise CommandError(f"no stdin to read the {what} from")
    if sys.stdin.isatty():
        value = getpass.getpass(f"{what.capitalize()}: ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CommandError(f"stdin is empty: pipe the {what} into the command, e.g. printf '%s\\n' ... |")
    return value


def _read_key_file(path: str) -> str:
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_KEY_FILE_BYTES:
            raise CommandError(f"{file} is too large to be a private key file")
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read key file {file}: {exc.strerror or exc.__class__.__name__}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{file} is not a text private key file") from None


class _RedactingParser(CommandParser):
    """Does not repeat unrecognized arguments back: ``--password hunter2`` must not echo the password."""

    def error(self, message: str) -> Any:
        if message.startswith("unrecognized arguments"):
            message = (
                "unrecognized arguments (not repeated, in case one is a secret: passwords and passphrases "
                "are read from stdin with --password-stdin / --passphrase-stdin, keys from --key-file)"
            )
        return super().error(message)


class Command(BaseCommand):
    help = (
        "Manage registered hosts: add, list, scan, trust, revoke, enable, disable, remove. "
        "Secrets are read from stdin or a key file, never from arguments."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # BaseCommand builds a plain CommandParser; the subclass only changes error().
        parser.__class__ = _RedactingParser
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        # No abbreviations: "--password SECRET" must not be taken for "--password-stdin SECRET".
        add = sub.add_parser("add", help="Register a host and its login credential.", allow_abbrev=False)
        add.add_argument("name", help="The name MCP clients use for the host (letters, digits, - and _).")
        add.add_argument("--address", required=True, help="DNS name or IP address.")
        add.add_argument("--port", type=_port, default=22)
        add.add_argument("--username", required=True)
        secret = add.add_mutually_exclusive_group(required=True)
        secret.add_argument(
            "--password-stdin", action="store_true", help="Read the login password from stdin's first line."
        )
        secret.add_argument("--key-file", metavar="PATH", help="Private key file (OpenSSH or PEM).")
        secret.add_argument(
            "--use-credential", metavar="CREDENTIAL", help="Log in with an already registered credential."
        )
        add.add_argument(
            "--passphrase-stdin",
            action="store_true",
            help="Read the key's passphrase from stdin's first line.",
        )
        add.add_argument("--description", default="")
        add.add_argument("--tag", action="append", default=[], dest="tags", help="A label; repeat for more.")
        add.add_argument(
            "--trust-on-first-use",
            action="store_true",
            help="Trust the first host key seen instead of waiting for an approval.",
        )
        add.add_argument("--credential-name", help="Name of the new credential (default: the host name).")
        add.add_argument(
            "--jump",
            metavar="NAME",
            help="Connect through this registered host (its jump host: a bastion), like ssh -J.",
        )

        listing = sub.add_parser("list", help="Show registered hosts.")
        listing.add_argument("--json", action="store_true", help="Print a JSON array.")

        scan = sub.add_parser("scan", help="Fetch the host keys a server offers and store them as pending.")
        scan.add_argument("name")

        trust = sub.add_parser("trust", help="Approve a host key.")
        trust.add_argument("name")
        trust.add_argument("fingerprint", help="SHA256:... as printed by scan.")
        trust.add_argument("--by", default=None, help="Who approved it (default: your OS user name).")

        revoke = sub.add_parser("revoke", help="Stop trusting a host key.")
        revoke.add_argument("name")
        revoke.add_argument("fingerprint")
        revoke.add_argument("--by", default=None, help="Who revoked it (default: your OS user name).")

        for action in ("enable", "disable"):
            toggle = sub.add_parser(action, help=f"{action.capitalize()} a host for MCP clients.")
            toggle.add_argument("name")

        remove = sub.add_parser(
            "remove", help="Delete a host (and its credential when no other host uses it)."
        )
        remove.add_argument("name")
        remove.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        handler = {
            "add": self.add_action,
            "list": self.list_action,
            "scan": self.scan_action,
            "trust": self.trust_action,
            "revoke": self.revoke_action,
            "enable": self.enable_action,
            "disable": self.disable_action,
            "remove": self.remove_action,
        }[action]
        handler(options)

    # -- add ---------------------------------------------------------------------------

    def add_action(self, options: dict[str, Any]) -> None:
        name: str = options["name"]
        if options["passphrase_stdin"] and not options["key_file"]:
            raise CommandError("--passphrase-stdin goes with --key-file")
        if Host.objects.filter(name=name).exists():
            raise CommandError(f"a host named '{name}' already exists")
        jump = self._host(options["jump"]) if options["jump"] else None

        credential = self._credential_for(name, options)
        tags = list(dict.fromkeys(t.strip() for t in options["tags"] if t.strip()))
        host = Host(
            name=name,
            address=options["address"].strip(),
            port=options["port"],
            username=options["username"],
            description=options["description"],
            tags=tags,
            trust_on_first_use=options["trust_on_first_use"],
            jump_host=jump,
        )
        with transaction.atomic():
            if credential.pk is None:
                self._validate(credential)
                credential.save()
            host.credential = credential
            self._validate(host)
            host.save()

        detail = credential.fingerprint or credential.get_kind_display().lower()
        self.stdout.write(
            f"Registered host '{host.name}' ({host.username}@{host.address}:{host.port}) "
            f"with credential '{credential.name}' ({detail})."
        )
        if jump is not None:
            chain = " -> ".join(h.name for h in host.jump_chain())
            self.stdout.write(f"Connections go through {chain}.")
        if host.trust_on_first_use:
            self.stdout.write("The first host key seen will be trusted (trust-on-first-use).")
        else:
            self.stdout.write(
                f'Next: run "sshcontrol hosts scan {host.name}" '
                f'then "sshcontrol hosts trust {host.name} SHA256:..."'
            )

    def _credential_for(self, host_name: str, options: dict[str, Any]) -> Credential:
        if options["use_credential"]:
            try:
                return Credential.objects.get(name=options["use_credential"])
            except Credential.DoesNotExist:
                raise CommandError(f"no credential named '{options['use_credential']}'") from None
        cred_name = options["credential_name"] or host_name
        if Credential.objects.filter(name=cred_name).exists():
            raise CommandError(
                f"a credential named '{cred_name}' already exists; choose another name with "
                "--credential-name or reuse it with --use-credential"
            )
        credential = Credential(name=cred_name)
        if options["password_stdin"]:
            credential.store_password(_read_stdin_line("password"))
        else:
            key_text = _read_key_file(options["key_file"])
            passphrase = _read_stdin_line("passphrase") if options["passphrase_stdin"] else ""
            try:
                credential.store_private_key(key_text, passphrase)
            except KeyFileError as exc:
                raise CommandError(f"{options['key_file']}: {exc}") from None
        return credential

    def _validate(self, obj: Credential | Host) -> None:
        try:
            obj.full_clean()
        except ValidationError as exc:
            # Field validators report field names and rules, never the encrypted values.
            raise CommandError(validation_message(exc)) from None

    # -- list --------------------------------------------------------------------------

    def list_action(self, options: dict[str, Any]) -> None:
        hosts = (
            Host.objects.select_related("credential", "jump_host")
            .prefetch_related("host_keys")
            .order_by("name")
        )
        if options["json"]:
            self.stdout.write(json.dumps([self._as_dict(h) for h in hosts], indent=2))
            return
        rows = [("NAME", "ADDRESS", "USER", "TAGS", "ENABLED", "KEY STATE", "CREDENTIAL")]
        for h in hosts:
            rows.append(
                (
                    h.name,
                    f"{h.address}:{h.port}" + (f" via {h.jump_host.name}" if h.jump_host else ""),
                    h.username,
                    ",".join(h.tag_list) or "-",
                    "yes" if h.enabled else "no",
                    h.key_state,
                    h.credential.kind if h.credential else "-",
                )
            )
        if len(rows) == 1:
            self.stdout.write('No hosts registered. Add one with "sshcontrol hosts add".')
            return
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

    def _as_dict(self, host: Host) -> dict[str, Any]:
        credential = host.credential
        return {
            "name": host.name,
            "address": host.address,
            "port": host.port,
            "username": host.username,
            "description": host.description,
            "tags": host.tags,
            "enabled": host.enabled,
            "trust_on_first_use": host.trust_on_first_use,
            "jump_host": host.jump_host.name if host.jump_host else None,
            "key_state": host.key_state,
            "credential": None
            if credential is None
            else {
                "name": credential.name,
                "kind": credential.kind,
                "has_secret": credential.has_secret,
                "fingerprint": credential.fingerprint or None,
            },
            "host_keys": [
                {
                    "key_type": k.key_type,
                    "fingerprint": k.fingerprint,
                    "state": k.state,
                    "approved_by": k.approved_by or None,
                    "approved_at": k.approved_at.isoformat() if k.approved_at else None,
                }
                for k in host.host_keys.all()
            ],
            "last_connected_at": host.last_connected_at.isoformat() if host.last_connected_at else None,
        }

    # -- host keys -----------------------------------------------------------------------

    def scan_action(self, options: dict[str, Any]) -> None:
        host = self._host(options["name"])
        outcome = hostkeys.scan(host)  # through its jump hosts, if any, each verified
        if outcome.error:
            raise CommandError(outcome.error)
        stored = outcome.keys
        width = max(len(k.key_type) for k in stored)
        via = f" (through {' -> '.join(h.name for h in host.jump_chain())})" if host.jump_host_id else ""
        self.stdout.write(f"Host keys offered by {host.address}:{host.port}{via}:")
        for key in stored:
            self.stdout.write(f"  {key.key_type.ljust(width)}  {key.fingerprint}  {key.state}")
        pending = [k for k in stored if k.state == HostKey.State.PENDING]
        if pending:
            self.stdout.write(
                "Compare the fingerprints with the server's own (ssh-keygen -lf on the server), then:"
            )
            for key in pending:
                self.stdout.write(f"  sshcontrol hosts trust {host.name} {key.fingerprint}")
        elif any(k.state == HostKey.State.TRUSTED for k in stored):
            self.stdout.write("The server's keys are already trusted.")

    def trust_action(self, options: dict[str, Any]) -> None:
        host = self._host(options["name"])
        by = options["by"] or getpass.getuser()
        try:
            # Naming the key by its fingerprint is the explicit decision a changed key needs.
            approval = hostkeys.approve(host, self._fingerprint(options["fingerprint"]), by, replace=True)
        except hostkeys.HostKeyNotFound as exc:
            raise CommandError(f'{exc}; run "sshcontrol hosts scan {host.name}" first') from None
        key = approval.key
        self.stdout.write(f"Trusted {key.key_type} {key.fingerprint} for host '{host.name}' (by {by}).")
        for old in approval.replaced:
            self.stdout.write(f"Revoked the {old.key_type} key it replaces: {old.fingerprint}.")

    def revoke_action(self, options: dict[str, Any]) -> None:
        host = self._host(options["name"])
        by = options["by"] or getpass.getuser()
        try:
            key = hostkeys.revoke(host, self._fingerprint(options["fingerprint"]), by)
        except hostkeys.HostKeyNotFound as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Revoked {key.key_type} {key.fingerprint} for host '{host.name}'.")

    # -- enable / disable / remove -------------------------------------------------------

    def enable_action(self, options: dict[str, Any]) -> None:
        self._set_enabled(options["name"], True)

    def disable_action(self, options: dict[str, Any]) -> None:
        self._set_enabled(options["name"], False)

    def _set_enabled(self, name: str, enabled: bool) -> None:
        host = self._host(name)
        host.enabled = enabled
        host.save(update_fields=["enabled", "updated_at"])
        self.stdout.write(f"Host '{host.name}' is {'enabled' if enabled else 'disabled'}.")

    def remove_action(self, options: dict[str, Any]) -> None:
        host = self._host(options["name"])
        if not options["yes"]:
            if sys.stdin is None or not sys.stdin.isatty():
                raise CommandError(f"add --yes to confirm removing host '{host.name}'")
            answer = input(f"Remove host '{host.name}' and its host keys? [y/N] ")
            if answer.strip().lower() not in {"y", "yes"}:
                raise CommandError("not removed")
        users = sorted(host.jumped_from.values_list("name", flat=True))
        if users:
            raise CommandError(
                f"host '{host.name}' is the jump host of {', '.join(users)}; give those another jump "
                "host (or none) first"
            )
        with transaction.atomic():
            credential = host.credential
            host.delete()
            # A shared credential stays for the hosts that still log in with it.
            credential_removed = credential is not None and not credential.hosts.exists()
            if credential is not None and credential_removed:
                credential.delete()
        if credential is None:
            self.stdout.write(f"Removed host '{host.name}'.")
        elif credential_removed:
            self.stdout.write(f"Removed host '{host.name}' and its credential '{credential.name}'.")
        else:
            self.stdout.write(
                f"Removed host '{host.name}'; credential '{credential.name}' is kept for other hosts."
            )

    # -- helpers -------------------------------------------------------------------------

    def _host(self, name: str) -> Host:
        try:
            return Host.objects.select_related("credential").get(name=name)
        except Host.DoesNotExist:
            raise CommandError(f"no host named '{name}' (see: sshcontrol hosts list)") from None

    @staticmethod
    def _fingerprint(raw: str) -> str:
        value = raw.strip()
        return value if value.startswith("SHA256:") else f"SHA256:{value}"
