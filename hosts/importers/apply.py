"""Turning imported candidates into hosts: create, update or skip, with a line per host.

The ``import_hosts`` command and the admin's import page both call ``apply_import``.
A dry run goes through exactly the same steps inside a transaction that is rolled
back, so its report is the real one and nothing is written.

Secrets found in a source are never stored in clear: a key file becomes an encrypted
credential only with ``import_keys``, an inventory password only with
``import_passwords``; otherwise the report says they were ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from hosts.importers import Candidate, ParsedSource
from hosts.importers.jumps import HopResolver, link_chain, parse_proxy_jump
from hosts.keyfiles import MAX_KEY_FILE_BYTES, KeyFileError, PassphraseRequired
from hosts.models import Credential, Host
from hosts.validation import validation_message

CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"
SKIPPED = "skipped"

ImportProgress = Callable[[int, int], None]  # (hosts done, hosts in all): not sshlib.ProgressFn's bytes


@dataclass(frozen=True)
class ImportOptions:
    dry_run: bool = False
    update: bool = False  # existing hosts are skipped unless this is set
    credential: Credential | None = None  # attach this credential to every imported host
    import_keys: bool = False  # read IdentityFile / ansible_ssh_private_key_file into credentials
    import_passwords: bool = False  # store inventory passwords as encrypted credentials
    default_user: str = ""  # for hosts whose source names no user
    tags: tuple[str, ...] = ()  # added to every imported host
    progress_every: int = 100
    progress: ImportProgress | None = None


@dataclass
class ReportRow:
    name: str
    outcome: str  # created, updated, unchanged or skipped
    detail: str  # what was done, or why it was skipped
    source: str
    notes: list[str] = field(default_factory=list)
    host_id: int | None = None


@dataclass
class ImportReport:
    dry_run: bool
    rows: list[ReportRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((CREATED, UPDATED, UNCHANGED, SKIPPED), 0)
        for row in self.rows:
            counts[row.outcome] += 1
        return counts

    def summary(self) -> str:
        counts = self.counts()
        verb = "would be " if self.dry_run else ""
        text = (
            f"{len(self.rows)} host(s): {counts[CREATED]} {verb}created, {counts[UPDATED]} {verb}updated, "
            f"{counts[UNCHANGED]} unchanged, {counts[SKIPPED]} skipped"
        )
        return text + (" (dry run: nothing was written)" if self.dry_run else "")


class _Rollback(Exception):
    """Raised at the end of a dry run to undo everything it did."""


@dataclass
class _Secrets:
    """Credentials made during one import, so hosts sharing a key or password share a credential."""

    options: ImportOptions
    key_base_dir: Path | None
    by_path: dict[Path, tuple[Credential | None, str]] = field(default_factory=dict)
    by_password: dict[str, Credential] = field(default_factory=dict)

    def for_candidate(self, candidate: Candidate, name: str, notes: list[str]) -> Credential | None:
        if self.options.credential is not None:
            if candidate.identity_file:
                notes.append(f"key file {candidate.identity_file} not imported: --credential given")
            return self.options.credential
        if candidate.identity_file:
            if self.options.import_keys:
                credential, note = self.key_credential(candidate.identity_file)
                if note:
                    notes.append(note)
                if credential is not None:
                    return credential
            else:
                notes.append(f"key file {candidate.identity_file} not imported (see --import-keys)")
        if candidate.password:
            if self.options.import_passwords:
                return self.password_credential(candidate, name, notes)
            notes.append(
                f"{candidate.password_var} ignored: passwords are stored only with --import-passwords"
            )
        return None

    def key_credential(self, raw_path: str) -> tuple[Credential | None, str]:
        if self.key_base_dir is None:
            return None, f"key file {raw_path} not read: the source is not on this machine"
        path = Path(raw_path).expanduser()
        if not path.is_absolute():
            path = self.key_base_dir / path
        if path not in self.by_path:
            self.by_path[path] = self._load_key(path)
        return self.by_path[path]

    def _load_key(self, path: Path) -> tuple[Credential | None, str]:
        try:
            if path.stat().st_size > MAX_KEY_FILE_BYTES:
                return None, f"key file {path} skipped: too large to be a private key"
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return None, f"key file {path} skipped: {exc.strerror or type(exc).__name__}"
        except UnicodeDecodeError:
            return None, f"key file {path} skipped: not a text private key"
        credential = Credential(name=_unique_credential_name(f"import-{path.name}"))
        try:
            info = credential.store_private_key(text)
        except PassphraseRequired:
            return None, (
                f"key file {path} skipped: it is passphrase-protected "
                "(register it in the admin or with 'sshcontrol hosts add --passphrase-stdin')"
            )
        except KeyFileError as exc:
            return None, f"key file {path} skipped: {exc}"
        existing = Credential.objects.filter(
            kind=Credential.Kind.PRIVATE_KEY, fingerprint=info.fingerprint
        ).first()
        if existing is not None:
            return existing, f"key {info.fingerprint} is already credential '{existing.name}'"
        credential.save()
        return credential, f"key file {path} stored encrypted as credential '{credential.name}'"

    def password_credential(self, candidate: Candidate, name: str, notes: list[str]) -> Credential:
        credential = self.by_password.get(candidate.password)
        if credential is None:
            credential = Credential(name=_unique_credential_name(f"import-{name}-password"))
            credential.store_password(candidate.password)
            credential.save()
            self.by_password[candidate.password] = credential
            notes.append(f"{candidate.password_var} stored encrypted as credential '{credential.name}'")
        else:
            notes.append(f"{candidate.password_var} is the password of credential '{credential.name}'")
        return credential


def _unique_credential_name(base: str) -> str:
    base = base[:90]
    name, n = base, 1
    while Credential.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def apply_import(parsed: ParsedSource, options: ImportOptions) -> ImportReport:
    """Create or update a host per candidate; return the per-host report."""
    report = ImportReport(dry_run=options.dry_run, notes=list(parsed.notes))
    total = len(parsed.candidates)
    secrets = _Secrets(options, parsed.key_base_dir)
    seen: dict[str, str] = {}
    imported: dict[str, Host] = {}
    try:
        with transaction.atomic():
            for done, candidate in enumerate(parsed.candidates, start=1):
                report.rows.append(_import_one(candidate, options, secrets, seen, imported))
                if options.progress and options.progress_every > 0 and done % options.progress_every == 0:
                    options.progress(done, total)
            # Once every host exists: a jump host may come later in the source than its users.
            resolver = HopResolver(imported)
            for row, candidate in zip(report.rows, parsed.candidates, strict=True):
                if row.host_id is not None and candidate.proxy_jump:
                    _link_jump_hosts(row, candidate, imported[candidate.alias], resolver)
            if options.dry_run:
                raise _Rollback
    except _Rollback:
        for row in report.rows:
            row.host_id = None
    if options.progress and options.progress_every > 0 and total % options.progress_every:
        options.progress(total, total)
    return report


def _import_one(
    candidate: Candidate,
    options: ImportOptions,
    secrets: _Secrets,
    seen: dict[str, str],
    imported: dict[str, Host],
) -> ReportRow:
    name = candidate.name
    row = ReportRow(name=name or candidate.alias, outcome=SKIPPED, detail="", source=candidate.source)
    row.notes.extend(candidate.notes)
    if name != candidate.alias and name:
        row.notes.append(f"named '{name}' (from '{candidate.alias}')")
    if candidate.problem:
        row.detail = candidate.problem
        return row
    if not name:
        row.detail = f"no usable host name in {candidate.alias!r}"
        return row
    if name in seen:
        row.detail = f"a host of the same name came earlier in this import ({seen[name]})"
        return row
    seen[name] = candidate.source
    username = candidate.username or options.default_user

    existing = Host.objects.select_related("credential").filter(name=name).first()
    if existing is not None and not options.update:
        row.detail = "already registered (use update to change it)"
        return row
    if existing is None and not username:
        row.detail = "no user given in the source (set a default user)"
        return row

    # Validate before a credential is made, so a host that is skipped leaves no credential behind.
    host = existing or _new_host(candidate, name, username, options)
    changes = _update_host(host, candidate, username, options) if existing is not None else []
    try:
        host.full_clean(exclude=["credential"])
    except ValidationError as exc:
        row.detail = validation_message(exc)
        return row
    credential = secrets.for_candidate(candidate, name, row.notes)
    if credential is not None and host.credential_id != credential.pk:
        if existing is not None:
            changes.append(
                f"credential {host.credential.name if host.credential else 'none'} -> {credential}"
            )
        host.credential = credential
    if existing is None:
        host.save()
        row.outcome, row.detail = CREATED, _describe(host)
    elif changes:
        host.save()
        row.outcome, row.detail = UPDATED, "; ".join(changes)
    else:
        row.outcome, row.detail = UNCHANGED, "already up to date"
    row.host_id = host.pk
    imported[candidate.alias] = host
    return row


def _link_jump_hosts(row: ReportRow, candidate: Candidate, host: Host, resolver: HopResolver) -> None:
    """Link the host to the jump hosts of its ProxyJump (see ``hosts.importers.jumps``)."""
    said = f"ProxyJump {candidate.proxy_jump} recorded"
    try:
        hops = parse_proxy_jump(candidate.proxy_jump)
    except ValueError as exc:
        row.notes.append(f"{said}; {exc}: not linked")
        return
    if not hops:
        return
    before = host.jump_host.name if host.jump_host is not None else "none"
    changed, notes = link_chain(host, hops, resolver)
    if changed:
        host.save(update_fields=["jump_host", "updated_at"])
        change = f"jump host {before} -> {host.jump_host}"
        if row.outcome == UNCHANGED:
            row.outcome, row.detail = UPDATED, change
        elif row.outcome == UPDATED:
            row.detail += f"; {change}"
    if host.jump_host is not None and (changed or not notes):
        chain = " -> ".join(h.name for h in host.jump_chain())
        notes.insert(0, f"connects through {chain}")
    row.notes.append("; ".join([said, *notes]))


def _describe(host: Host) -> str:
    text = f"{host.username}@{host.address}:{host.port}"
    if host.credential is not None:
        text += f" with credential '{host.credential.name}'"
    return text


def _new_host(candidate: Candidate, name: str, username: str, options: ImportOptions) -> Host:
    return Host(
        name=name,
        address=candidate.address or candidate.alias,
        port=candidate.port or 22,
        username=username,
        proxy_jump=candidate.proxy_jump,
        tags=list(dict.fromkeys([*candidate.tags, *options.tags])),
        description=f"Imported from {candidate.source}.",
    )


def _update_host(host: Host, candidate: Candidate, username: str, options: ImportOptions) -> list[str]:
    """Apply what the source says to ``host``; the list of changes made (empty: nothing to do).

    Only what the source states is changed; tags are added, never removed, so labels an
    admin gave by hand survive a re-import.
    """
    changes: list[str] = []
    wanted: dict[str, object] = {"address": candidate.address or candidate.alias}
    if candidate.port is not None:
        wanted["port"] = candidate.port
    if username:
        wanted["username"] = username
    if candidate.proxy_jump:
        wanted["proxy_jump"] = candidate.proxy_jump
    for attr, value in wanted.items():
        if getattr(host, attr) != value:
            changes.append(f"{attr} {getattr(host, attr)} -> {value}")
            setattr(host, attr, value)
    current = host.tag_list
    added = [t for t in dict.fromkeys([*candidate.tags, *options.tags]) if t not in current]
    if added:
        host.tags = current + added
        changes.append("tags + " + ", ".join(added))
    return changes
