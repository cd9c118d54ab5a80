"""Audit completions waiting for the database, kept on disk so a process that dies does not lose them.

``durable.complete`` hands a completion the database could not take within the retry bound
to a background thread (``dbretry.postpone``). That thread lives in process memory: a
process killed before the database came back used to leave the row ``running``, and the
next start relabelled it ``interrupted`` although the command's true outcome was known.
So each postponed completion is also written here, one owner-only JSON file per row in
``<data dir>/pending-completions/`` (0700 directory, 0600 files), and removed once the row
is written. The next ``mcp_serve`` start replays the files of dead processes before the
interrupted-row relabelling runs.

What is stored is the outcome as ``audit.writer.complete`` receives it, already redacted
(no secret is ever written to the file; ``secrets`` are applied here and dropped). The
replayed row's finish time and duration are those of the replay: the command's own end was
not recorded anywhere durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from audit import writer
from audit.models import AuditEvent
from audit.process import current_process_key, is_alive
from audit.redaction import redact
from sshcontrol import filemodes
from sshlib.execute import ExecResult

log = logging.getLogger(__name__)

DIRECTORY = "pending-completions"


@dataclass(frozen=True)
class Pending:
    """One spooled completion: the row, the process that owed it, and ``writer.complete``'s fields."""

    event_id: int
    process: str
    fields: dict[str, Any]


def command_outcome(run: ExecResult, **fields: Any) -> dict[str, Any]:
    """The ``outcome`` of a command that ran: what ``writer.complete_command`` hands ``writer.complete``."""
    return {
        "exit_status": run.exit_status,
        "signal": run.signal or "",
        "stdout": run.stdout,
        "stderr": run.stderr,
        "stdout_bytes": run.stdout_bytes,
        "stderr_bytes": run.stderr_bytes,
        "stdout_truncated": run.stdout_truncated,
        "stderr_truncated": run.stderr_truncated,
        **fields,
    }


def directory() -> Path:
    return Path(settings.DATA_DIR) / DIRECTORY


def path_of(event_id: int) -> Path:
    return directory() / f"{event_id}.json"


def _redacted(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets) if secrets else value
    if isinstance(value, Mapping):
        return {str(key): _redacted(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, secrets) for item in value]
    return value


def save(event_id: int, fields: Mapping[str, Any]) -> Path | None:
    """Write the completion of row ``event_id`` to its file; None if it cannot be kept (logged)."""
    secrets = tuple(fields.get("secrets") or ())
    kept = {key: _redacted(value, secrets) for key, value in fields.items() if key != "secrets"}
    record = {"event_id": event_id, "process": current_process_key(), "fields": kept}
    target = path_of(event_id)
    try:
        target.parent.mkdir(mode=filemodes.DIR_MODE, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        # O_EXCL and 0600 from the start: the outcome may hold command output.
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            filemodes.FILE_MODE,
        )
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except (OSError, TypeError, ValueError):
        log.exception("could not spool the completion of audit row %s; it lives in memory only", event_id)
        return None
    return target


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def load(path: Path) -> Pending | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return Pending(int(record["event_id"]), str(record["process"]), dict(record["fields"]))
    except (OSError, ValueError, KeyError, TypeError):
        log.exception("unreadable spooled completion %s (kept for an admin to look at)", path)
        return None


def orphaned() -> list[tuple[Path, Pending]]:
    """Spooled completions whose process is gone from this machine (a live one still writes its own)."""
    try:
        paths = sorted(directory().glob("*.json"))
    except OSError:
        return []
    found = []
    for path in paths:
        pending = load(path)
        if pending is not None and is_alive(pending.process) is False:
            found.append((path, pending))
    return found


def replay(pending: Pending) -> None:
    """Complete the row with its spooled outcome, unless something else finished it already."""
    if AuditEvent.objects.filter(pk=pending.event_id, status=AuditEvent.Status.RUNNING).exists():
        writer.complete(pending.event_id, **pending.fields)
