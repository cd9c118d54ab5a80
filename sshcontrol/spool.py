"""Audit completions waiting for the database, kept on disk so a process that dies does not lose them.

``durable.complete`` hands a completion the database could not take within the retry bound
to a background thread (``dbretry.postpone``). That thread lives in process memory: a
process killed before the database came back used to leave the row ``running``, and the
next start relabelled it ``interrupted`` although the command's true outcome was known.
So each postponed completion is also written here, one owner-only JSON file per row in
``<data dir>/pending-completions/`` (0700 directory, 0600 files), and removed once the row
is written. The next ``mcp_serve`` start replays the files of dead processes before the
interrupted-row relabelling runs.

What is stored is the ``audit.writer.Completion`` the row is finished with: command output
already redacted of the host's secrets where the session is held (the audit writer caps and
redacts it again when it writes). The replayed row's finish time and duration are those of
the replay: the command's own end was not recorded anywhere durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings

from audit import writer
from audit.models import AuditEvent
from audit.process import current_process_key, is_alive
from audit.writer import Completion
from sshcontrol import filemodes

log = logging.getLogger(__name__)

DIRECTORY = "pending-completions"


@dataclass(frozen=True)
class Pending:
    """One spooled completion: the row, the process that owed it, and how to finish the row."""

    event_id: int
    process: str
    completion: Completion


def directory() -> Path:
    return Path(settings.DATA_DIR) / DIRECTORY


def path_of(event_id: int) -> Path:
    return directory() / f"{event_id}.json"


def save(event_id: int, completion: Completion) -> Path | None:
    """Write the completion of row ``event_id`` to its file; None if it cannot be kept (logged)."""
    record = {"event_id": event_id, "process": current_process_key(), "completion": asdict(completion)}
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
        return Pending(int(record["event_id"]), str(record["process"]), Completion(**record["completion"]))
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
        writer.finish(pending.event_id, pending.completion)
