"""The tasks of ``sshcontrol/tasks.py`` as Celery tasks: the worker's side of the JSON edge.

Each task validates its JSON arguments into the typed request, runs the task function,
and returns an envelope (``sshcontrol/wire.py``). Names are stable strings, so a sender
never imports this module. Only workers (and Celery's autodiscovery) import it: the
embedded default does not load Celery's task machinery at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sshcontrol import tasks, wire
from sshcontrol.celery import app
from sshcontrol.taskspec import (
    CommandSpec,
    CopySpec,
    DispatchError,
    DownloadSpec,
    JobTicket,
    ListSpec,
    Owner,
    ReadSpec,
    UploadSpec,
)


def _answer(run: Callable[[], Any]) -> wire.Envelope:
    try:
        return wire.ok(run())
    except DispatchError as exc:
        return wire.failed(exc)


@app.task(name="sshcontrol.connect")
def connect(host_id: int, owner: Any, session_id: str | None = None, reopen: bool = False) -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.connect(host_id, wire.load(Owner, owner), session_id, reopen)))


@app.task(name="sshcontrol.execute", bind=True)
def execute(
    self: Any, session_id: str, spec: Any, call_id: str = "", audit_event_id: int | None = None
) -> wire.Envelope:
    """``execute`` with progress published through the result backend (state PROGRESS)."""

    def progress(out_bytes: int, err_bytes: int) -> None:
        self.update_state(state="PROGRESS", meta={"stdout_bytes": out_bytes, "stderr_bytes": err_bytes})

    return _answer(
        lambda: wire.dump(
            tasks.execute(
                session_id,
                wire.load(CommandSpec, spec),
                call_id=call_id,
                progress=progress,
                audit_event_id=audit_event_id,
            )
        )
    )


@app.task(name="sshcontrol.execute_job", bind=True)
def execute_job(
    self: Any, session_id: str, spec: Any, ticket: Any, audit_event_id: int | None = None
) -> wire.Envelope:
    """``execute_job``: progress as ``execute``'s while the call waits; the job goes on in this worker."""
    # The command's own thread reports progress: the task's request (its id, and the reply
    # queue the rpc:// backend of a RabbitMQ deployment answers on) is thread-local, so it is
    # taken here; update_state would read an empty request in that thread.
    request = self.request

    def progress(out_bytes: int, err_bytes: int) -> None:
        meta = {"stdout_bytes": out_bytes, "stderr_bytes": err_bytes}
        self.backend.store_result(request.id, meta, "PROGRESS", request=request)

    return _answer(
        lambda: wire.dump(
            wire.ExecutedOrJob(
                tasks.execute_job(
                    session_id,
                    wire.load(CommandSpec, spec),
                    wire.load(JobTicket, ticket),
                    progress=progress,
                    audit_event_id=audit_event_id,
                )
            )
        )
    )


@app.task(name="sshcontrol.read_output")
def read_output(spec: Any) -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.read_output(wire.load(ReadSpec, spec))))


@app.task(name="sshcontrol.upload")
def upload(session_id: str, spec: Any) -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.upload(session_id, wire.load(UploadSpec, spec))))


@app.task(name="sshcontrol.download")
def download(session_id: str, spec: Any) -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.download(session_id, wire.load(DownloadSpec, spec))))


@app.task(name="sshcontrol.copy")
def copy(session_id: str, dest_session_id: str, spec: Any) -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.copy(session_id, dest_session_id, wire.load(CopySpec, spec))))


@app.task(name="sshcontrol.read_probe")
def read_probe(name: str) -> wire.Envelope:
    return _answer(lambda: tasks.read_probe(name))


@app.task(name="sshcontrol.list_files")
def list_files(session_id: str, spec: Any) -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.list_files(session_id, wire.load(ListSpec, spec))))


@app.task(name="sshcontrol.disconnect")
def disconnect(session_id: str, reason: str = "closed by the client") -> wire.Envelope:
    return _answer(lambda: wire.dump(tasks.disconnect(session_id, reason)))


@app.task(name="sshcontrol.probe")
def probe(session_ids: list[str]) -> wire.Envelope:
    return _answer(lambda: tasks.probe(session_ids))
