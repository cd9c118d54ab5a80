"""The one writer of the audit log. CONTRACT — to be implemented.

Every AuditEvent row is created by ``begin`` (status running, before the action) and
finished by ``complete`` (after it). Command text, stdout, stderr and error text are
redacted and capped here, so no caller can forget to.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from hosts.models import Host


def begin(
    *,
    tool: str,
    actor: str,
    transport: str,
    host: Host | None = None,
    session_id: str = "",
    command: str = "",
    working_directory: str = "",
    remote_path: str = "",
    local_path: str = "",
    request_id: uuid.UUID | None = None,
    details: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> int:
    """Open a row in status ``running`` and return its id."""
    raise NotImplementedError


def complete(
    event_id: int,
    *,
    status: str,
    session_id: str | None = None,
    exit_status: int | None = None,
    signal: str = "",
    stdout: str = "",
    stderr: str = "",
    stdout_bytes: int | None = None,
    stderr_bytes: int | None = None,
    stdout_truncated: bool = False,
    stderr_truncated: bool = False,
    file_size: int | None = None,
    file_sha256: str = "",
    reconnected: bool = False,
    error: str = "",
    details: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> None:
    """Finish a running row; a row that is already finished is never rewritten."""
    raise NotImplementedError


def mark_interrupted() -> int:
    """Mark ``interrupted`` the running rows whose process (on this machine) is gone; return how many."""
    raise NotImplementedError
