"""Running one command on a channel. CONTRACT — to be implemented."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import paramiko


@dataclass(frozen=True)
class ExecRequest:
    command: str
    working_directory: str | None = None
    timeout: float = 60.0
    stdin: bytes | None = None
    max_output_bytes: int = 1 << 20


@dataclass
class ExecResult:
    exit_status: int | None  # None when the process was killed (timeout / cancel)
    signal: str | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    cancelled: bool
    duration_ms: float


ProgressCallback = Callable[[int, int], None]  # (stdout_bytes so far, stderr_bytes so far)


def run_command(
    client: paramiko.SSHClient,
    request: ExecRequest,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExecResult:
    """Run ``request.command`` on a new channel of ``client``'s transport. See module docs."""
    raise NotImplementedError
