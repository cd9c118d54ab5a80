"""Hash format 2: the hash covers copied values only (host_ref, not the host foreign key).

Rows already chained keep the formula they were hashed with (chain_version 1), with the
host id they were hashed with copied into ``host_ref``. Where the host was deleted before
this migration, the foreign key is already NULL and the id lost from the row; it is
recovered as the one id that reproduces the row's stored hash (a SHA-256 match cannot be
found for a wrong id, so nothing unverified is vouched for). A row that matches no id
stays as it is and ``audit_verify`` reports it.

The version-1 hash is copied here, frozen, as audit.chain will change again.
"""

import hashlib
import json
import uuid
from datetime import UTC, date, datetime

from django.db import migrations, models
from django.db.models import F, Max

V1_FIELDS = (
    "id", "request_id", "started_at", "finished_at", "duration_ms", "status", "actor", "client",
    "transport", "process", "host_id", "host_name", "host_address", "session_id", "tool", "command",
    "working_directory", "exit_status", "signal", "stdout", "stderr", "stdout_bytes", "stderr_bytes",
    "stdout_truncated", "stderr_truncated", "remote_path", "local_path", "file_size", "file_sha256",
    "reconnected", "error", "details", "chain_seq", "prev_hash",
)  # fmt: skip

# How far past the highest host id known to look for a deleted host's id.
SEARCH_MARGIN = 10_000
_SENTINEL = 987_654_321_987_654_321


def _plain(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date | uuid.UUID):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise TypeError(f"cannot hash a {type(value).__name__} audit value")


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_plain)


def _v1_bytes(row, host_id):
    content = {name: row[name] for name in V1_FIELDS}
    content["host_id"] = host_id
    return _ENCODER.encode({k: v for k, v in content.items() if v is not None}).encode("ascii")


def _recover_host_id(row, candidates, first_guess):
    """The host id that reproduces the row's version-1 hash, or None."""
    expected = row["chain_hash"]
    if first_guess is not None and hashlib.sha256(_v1_bytes(row, first_guess)).hexdigest() == expected:
        return first_guess
    # Hash the text around the id once: only the digits change from one candidate to the next.
    text = _v1_bytes(row, _SENTINEL)
    marker = b'"host_id":%d' % _SENTINEL
    if text.count(marker) != 1:
        return None
    head, tail = text.split(marker)
    for candidate in candidates:
        if hashlib.sha256(b'%s"host_id":%d%s' % (head, candidate, tail)).hexdigest() == expected:
            return candidate
    return None


def keep_version_1(apps, schema_editor):
    db = schema_editor.connection.alias
    AuditEvent = apps.get_model("audit", "AuditEvent")
    Host = apps.get_model("hosts", "Host")
    events = AuditEvent.objects.using(db)
    events.update(host_ref=F("host_id"))
    events.filter(chain_seq__isnull=False).update(chain_version=1)
    orphans = events.filter(chain_seq__isnull=False, host_id__isnull=True).exclude(host_name="")
    if not orphans.exists():
        return
    highest = max(
        Host.objects.using(db).aggregate(top=Max("id"))["top"] or 0,
        events.aggregate(top=Max("host_id"))["top"] or 0,
    )
    candidates = range(1, highest + SEARCH_MARGIN + 1)
    found_for = {}  # (host_name, host_address) -> id: rows of one deleted host share it
    for row in orphans.order_by("chain_seq").values(*V1_FIELDS, "chain_hash").iterator():
        if hashlib.sha256(_v1_bytes(row, None)).hexdigest() == row["chain_hash"]:
            continue  # hashed without a host id: nothing was lost
        key = (row["host_name"], row["host_address"])
        host_id = _recover_host_id(row, candidates, found_for.get(key))
        if host_id is not None:
            found_for[key] = host_id
            events.filter(pk=row["id"]).update(host_ref=host_id)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0003_event_client'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='chain_version',
            field=models.PositiveSmallIntegerField(default=2, editable=False, help_text='The hash format of this row (see audit.chain).'),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='host_ref',
            field=models.BigIntegerField(editable=False, help_text="The host's id when the call was made (kept after it is deleted).", null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='stdin',
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='stdin_bytes',
            field=models.BigIntegerField(editable=False, help_text='Size of the stdin sent.', null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='stdin_sha256',
            field=models.CharField(blank=True, editable=False, help_text='SHA-256 of the stdin sent; blank when redaction hid part of it (see docs/security.md).', max_length=64),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='stdin_truncated',
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(keep_version_1, migrations.RunPython.noop),
    ]
