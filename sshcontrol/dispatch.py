"""How a tool call reaches the process that holds its SSH session.

Embedded (no ``SSHCONTROL_BROKER_URL``): that process is this one, and the task functions
of ``sshcontrol.tasks`` run directly in the calling thread with the caller's own objects:
no broker, no serialisation.

Distributed: sessions live in Celery workers (``sshcontrol/celery_dispatch.py``, routing
in ``sshcontrol/routing.py``). Both dispatchers have the same typed methods, one per task,
and both raise ``DispatchError`` for a failure.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Protocol

from django.conf import settings

from sshcontrol import holders, tasks
from sshcontrol.opening import BatchOpen
from sshcontrol.taskspec import (
    CommandSpec,
    Connected,
    Copied,
    CopySpec,
    Disconnected,
    DispatchError,
    Downloaded,
    DownloadSpec,
    Executed,
    JobTicket,
    Listed,
    ListSpec,
    OutputPage,
    Owner,
    ProgressFn,
    ReadSpec,
    StillRunning,
    Uploaded,
    UploadSpec,
)

CLIENT_CLOSE = "closed by the client"


class Dispatcher(Protocol):
    embedded: bool  # True when sessions live in this process

    def connect(
        self, host_id: int, owner: Owner, *, session_id: str | None = None, batch: BatchOpen | None = None
    ) -> Connected:
        """Open a new session for ``owner``, or reuse ``session_id`` of the same host.

        ``batch``: a batch's prepared host and the collector of its new sessions' rows, used
        where the connection is made in this process (the embedded default).
        """
        ...

    def execute(
        self,
        session_id: str,
        spec: CommandSpec,
        *,
        call_id: str = "",
        progress: ProgressFn | None = None,
        audit_event_id: int | None = None,
    ) -> Executed: ...

    def execute_job(
        self,
        session_id: str,
        spec: CommandSpec,
        ticket: JobTicket,
        *,
        progress: ProgressFn | None = None,
        audit_event_id: int | None = None,
    ) -> Executed | StillRunning:
        """``execute`` that becomes the background job ``ticket.job_id`` past ``ticket.foreground`` s."""
        ...

    def read_output(self, holder: str, spec: ReadSpec) -> OutputPage:
        """A page of an output kept by ``holder`` (the process that ran the job)."""
        ...

    def upload(self, session_id: str, spec: UploadSpec) -> Uploaded: ...

    def download(self, session_id: str, spec: DownloadSpec) -> Downloaded: ...

    def list_files(self, session_id: str, spec: ListSpec) -> Listed: ...

    def copy(self, session_id: str, dest_session_id: str, spec: CopySpec) -> Copied:
        """Copy a file from ``session_id``'s host to ``dest_session_id``'s, never through a local disk."""
        ...

    def disconnect(self, session_id: str, reason: str = CLIENT_CLOSE) -> Disconnected: ...

    def cancel(self, call_id: str) -> None: ...

    def alive(self, sessions: list[tuple[str, str]]) -> dict[str, bool | None]:
        """Liveness of (session_id, worker) pairs: True / False, None when it cannot be told."""
        ...


class EmbeddedDispatcher:
    """Runs tasks in this process, in the caller's thread."""

    embedded = True

    def connect(
        self, host_id: int, owner: Owner, *, session_id: str | None = None, batch: BatchOpen | None = None
    ) -> Connected:
        return tasks.connect(host_id, owner, session_id, batch=batch)

    def execute(
        self,
        session_id: str,
        spec: CommandSpec,
        *,
        call_id: str = "",
        progress: ProgressFn | None = None,
        audit_event_id: int | None = None,
    ) -> Executed:
        return tasks.execute(
            session_id, spec, call_id=call_id, progress=progress, audit_event_id=audit_event_id
        )

    def execute_job(
        self,
        session_id: str,
        spec: CommandSpec,
        ticket: JobTicket,
        *,
        progress: ProgressFn | None = None,
        audit_event_id: int | None = None,
    ) -> Executed | StillRunning:
        return tasks.execute_job(session_id, spec, ticket, progress=progress, audit_event_id=audit_event_id)

    def read_output(self, holder: str, spec: ReadSpec) -> OutputPage:
        # This process, or a job runner of this machine: the same data directory.
        return tasks.read_output(spec)

    def upload(self, session_id: str, spec: UploadSpec) -> Uploaded:
        return tasks.upload(session_id, spec)

    def download(self, session_id: str, spec: DownloadSpec) -> Downloaded:
        return tasks.download(session_id, spec)

    def list_files(self, session_id: str, spec: ListSpec) -> Listed:
        return tasks.list_files(session_id, spec)

    def copy(self, session_id: str, dest_session_id: str, spec: CopySpec) -> Copied:
        return tasks.copy(session_id, dest_session_id, spec)

    def disconnect(self, session_id: str, reason: str = CLIENT_CLOSE) -> Disconnected:
        return tasks.disconnect(session_id, reason)

    def cancel(self, call_id: str) -> None:
        tasks.cancel(call_id)

    def alive(self, sessions: list[tuple[str, str]]) -> dict[str, bool | None]:
        here = holders.current_worker()
        result: dict[str, bool | None] = {}
        mine = [sid for sid, worker in sessions if worker == here]
        if mine:
            with contextlib.suppress(DispatchError):  # unknown: left out, as a missing answer is
                result.update(tasks.probe(mine))
        for sid, worker in sessions:
            if worker != here:
                result[sid] = holders.worker_alive(worker)
        return result


_dispatcher: Dispatcher | None = None
_dispatcher_lock = threading.Lock()


def get_dispatcher() -> Dispatcher:
    global _dispatcher
    if _dispatcher is None:
        with _dispatcher_lock:
            if _dispatcher is None:
                if settings.BROKER_URL:
                    from sshcontrol.celery_dispatch import CeleryDispatcher

                    _dispatcher = CeleryDispatcher()
                else:
                    _dispatcher = EmbeddedDispatcher()
    return _dispatcher
