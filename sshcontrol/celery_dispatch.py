"""Distributed dispatch: a call's task goes to the Celery worker that holds its session.

Every call for a session goes to the direct queue of the worker recorded on its row
(``<node>.dq2``, chosen by ``sshcontrol/routing.py``). Messages carry ``expires`` so work
queued for a dead worker never runs late; a dead holder (stale heartbeat) has its session
re-opened on a live worker under the same id, audited as a reconnect.

This is the caller's side of the JSON edge: the typed requests are dumped to JSON here
and the replies loaded back (``sshcontrol/wire.py``); the worker's side is
``sshcontrol/celery_tasks.py``. Results come back through the process's shared listener
when they are stored in Redis (``sshcontrol/redis_results.py``): the calling thread only
waits on a future. With ``rpc://`` (RabbitMQ) Celery already delivers them to a reply
queue of the calling thread, and ``AsyncResult.get`` is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings

from sshcontrol import copy_relay, holders, metrics, shared_storage, tasks, transfer_relay, wire
from sshcontrol.dbretry import retrying
from sshcontrol.models import SshSession
from sshcontrol.opening import BatchOpen
from sshcontrol.routing import Routing, holder_alive, worker_stopped
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
    Failure,
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

if TYPE_CHECKING:
    from sshcontrol.redis_results import ResultListener

log = logging.getLogger(__name__)

R = TypeVar("R", Executed, Uploaded, Downloaded, Listed, Copied, wire.ExecutedOrJob)

# A broker that is down gives a clear error within seconds instead of a hang.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}

# How long a worker whose heartbeat is stale gets to answer a ping before its calls are given up.
PING_SECONDS = 0.5


def failure(kind: Failure, message: str) -> wire.Envelope:
    return wire.failed(DispatchError(kind, message))


class CeleryDispatcher:
    """Sends tasks to the Celery worker that holds (or will hold) the session."""

    embedded = False

    def __init__(self) -> None:
        from sshcontrol.celery import app

        self.app = app
        self.routing = Routing()
        self._call_nodes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._listener: ResultListener | None = None
        self._queues: dict[str, Any] = {}
        self._declared: set[str] = set()
        self._listener_checked = False

    # -- the Dispatcher interface ---------------------------------------------------------------

    def connect(
        self, host_id: int, owner: Owner, *, session_id: str | None = None, batch: BatchOpen | None = None
    ) -> Connected:
        # ``batch`` is not sent: the worker that connects loads the host and writes its row itself.
        kwargs = {"host_id": host_id, "owner": wire.dump(owner), "session_id": session_id}
        if session_id is None:
            node = self.routing.pick_worker()
            if node is None:
                raise DispatchError(
                    Failure.NO_WORKER, "no sshcontrol worker is running (celery -A sshcontrol worker)"
                )
            wait = float(settings.CONNECT_TIMEOUT) + _margin()
            with self.routing.opening(node):
                return wire.load(Connected, wire.unwrap(self.send(node, "connect", kwargs, wait)))
        node = self._holder_of(session_id)
        wait = float(settings.DEFAULT_TIMEOUT) + _margin()
        return wire.load(Connected, wire.unwrap(self.send(node, "connect", kwargs, wait)))

    def execute(
        self,
        session_id: str,
        spec: CommandSpec,
        *,
        call_id: str = "",
        progress: ProgressFn | None = None,
        audit_event_id: int | None = None,
    ) -> Executed:
        kwargs = {"spec": wire.dump(spec), "call_id": call_id, "audit_event_id": audit_event_id}
        wait = spec.timeout + _margin()
        return self._on_session(Executed, session_id, "execute", kwargs, wait, progress, call_id)

    def execute_job(
        self,
        session_id: str,
        spec: CommandSpec,
        ticket: JobTicket,
        *,
        progress: ProgressFn | None = None,
        audit_event_id: int | None = None,
    ) -> Executed | StillRunning:
        kwargs = {"spec": wire.dump(spec), "ticket": wire.dump(ticket), "audit_event_id": audit_event_id}
        # The worker answers by the foreground limit at the latest (then the command goes on there).
        wait = min(spec.timeout, ticket.foreground) + _margin()
        done = self._on_session(
            wire.ExecutedOrJob, session_id, "execute_job", kwargs, wait, progress, ticket.job_id
        )
        return replace(done.reply, reconnected=True) if done.reconnected else done.reply

    def read_output(self, holder: str, spec: ReadSpec) -> OutputPage:
        if worker_stopped(holder):
            raise DispatchError(Failure.OUTPUT_NOT_FOUND, f"the worker that ran it ({holder}) stopped")
        envelope = self.send(holder, "read_output", {"spec": wire.dump(spec)}, _default_wait())
        return wire.load(OutputPage, wire.unwrap(envelope))

    def upload(self, session_id: str, spec: UploadSpec) -> Uploaded:
        def run(streamed: UploadSpec) -> Uploaded:
            return self._on_session(
                Uploaded, session_id, "upload", {"spec": wire.dump(streamed)}, _transfer_wait()
            )

        if spec.stream is not None:
            return run(spec)  # the bytes come from another worker's stream (copy_relay.py)
        if spec.local_path is not None and settings.TRANSFER_SHARED:
            self._require_shared(session_id)
            return run(spec)
        # The file is on this machine, the inline content in this process: streamed to the holder.
        return transfer_relay.upload(spec, run)

    def download(self, session_id: str, spec: DownloadSpec) -> Downloaded:
        def run(streamed: DownloadSpec) -> Downloaded:
            return self._on_session(
                Downloaded, session_id, "download", {"spec": wire.dump(streamed)}, _transfer_wait()
            )

        if spec.local_path is None:
            return run(spec)  # inline (one page, in the reply), or to another worker (copy_relay.py)
        if settings.TRANSFER_SHARED:
            self._require_shared(session_id)
            return run(spec)
        return transfer_relay.download(spec, run)

    def copy(self, session_id: str, dest_session_id: str, spec: CopySpec) -> Copied:
        node = self._holder_of(session_id)
        if node == self._holder_of(dest_session_id) and self.routing.is_live(node):
            # One worker holds both ends: the copy runs there in one task, as on the embedded default.
            kwargs = {"dest_session_id": dest_session_id, "spec": wire.dump(spec)}
            return self._on_session(Copied, session_id, "copy", kwargs, _transfer_wait())
        return copy_relay.across(
            partial(self.download, session_id), partial(self.upload, dest_session_id), spec
        )

    def _require_shared(self, session_id: str) -> None:
        """Refuse unless the worker that will open the path passed the shared-storage probe.

        That is the holder, or, when it is gone, any live worker (the session re-opens on one).
        """
        node = self._holder_of(session_id)
        nodes = [node] if self.routing.is_live(node) else retrying(holders.live_workers, "listing workers")
        for each in nodes:
            shared_storage.require(each, partial(self.read_probe, each))

    def read_probe(self, node: str, name: str) -> str:
        """The SHA-256 worker ``node`` reads from the probe file ``name`` in its transfer directory."""
        answer = wire.unwrap(self.send(node, "read_probe", {"name": name}, _default_wait()))
        return str(answer)

    def list_files(self, session_id: str, spec: ListSpec) -> Listed:
        return self._on_session(Listed, session_id, "list_files", {"spec": wire.dump(spec)}, _default_wait())

    def disconnect(self, session_id: str, reason: str = "closed by the client") -> Disconnected:
        node = self._holder_of(session_id)
        if worker_stopped(node):
            return tasks.disconnect(session_id, reason)  # nothing left to close remotely: just record it
        kwargs = {"session_id": session_id, "reason": reason}
        return wire.load(Disconnected, wire.unwrap(self.send(node, "disconnect", kwargs, _default_wait())))

    def cancel(self, call_id: str) -> None:
        with self._lock:
            node = self._call_nodes.get(call_id)
        if node is not None:
            self.app.control.broadcast(
                "sshcontrol_cancel", arguments={"call_id": call_id}, destination=[node], reply=False
            )

    def alive(self, sessions: list[tuple[str, str]]) -> dict[str, bool | None]:
        result: dict[str, bool | None] = {}
        by_node: dict[str, list[str]] = {}
        for sid, worker in sessions:
            by_node.setdefault(worker, []).append(sid)
        for node, sids in by_node.items():
            if worker_stopped(node):
                result.update(dict.fromkeys(sids, False))
                continue
            envelope = self.send(node, "probe", {"session_ids": sids}, wait=5.0)
            if envelope["ok"]:
                result.update({sid: bool(v) for sid, v in envelope["result"].items()})
            else:
                result.update(dict.fromkeys(sids, None))
        return result

    # -- calls on a session ---------------------------------------------------------------------

    def _holder_of(self, session_id: str) -> str:
        node = self.routing.holder(session_id)
        if node is None:
            raise DispatchError(Failure.SESSION_NOT_FOUND, f"unknown session '{session_id}'")
        return node

    def _on_session(
        self,
        reply: type[R],
        session_id: str,
        task: str,
        kwargs: dict[str, Any],
        wait: float,
        progress: ProgressFn | None = None,
        call_id: str = "",
    ) -> R:
        """Run ``task`` on the session's holder; re-open the session elsewhere if the holder is gone."""
        node = self._holder_of(session_id)
        kwargs = {**kwargs, "session_id": session_id}
        if call_id:
            with self._lock:
                self._call_nodes[call_id] = node
        try:
            if not self.routing.is_live(node):
                # The holder is gone: re-open the session on a live worker instead of queueing
                # work for a dead one.
                return self._reopen_and_retry(reply, session_id, task, kwargs, wait, progress, call_id)
            envelope = self.send(node, task, kwargs, wait, progress)
            if not envelope["ok"] and envelope["kind"] == Failure.SESSION_NOT_FOUND:
                return self._reopen_and_retry(reply, session_id, task, kwargs, wait, progress, call_id)
            if not envelope["ok"] and envelope["kind"] == Failure.WORKER_LOST:
                # The holder died under this call: its command may have partly run, so it is not
                # re-run; the session is re-opened elsewhere on its next call.
                retrying(
                    lambda: SshSession.objects.filter(session_id=session_id, worker=node).mark_lost(
                        f"worker {node} stopped"
                    ),
                    "marking the session lost",
                )
            return wire.load(reply, wire.unwrap(envelope))
        finally:
            if call_id:
                with self._lock:
                    self._call_nodes.pop(call_id, None)

    def _reopen_and_retry(
        self,
        reply: type[R],
        session_id: str,
        task: str,
        kwargs: dict[str, Any],
        wait: float,
        progress: ProgressFn | None,
        call_id: str,
    ) -> R:
        """The holder no longer has the session (died or restarted): re-open it on a live worker."""
        row = retrying(
            lambda: SshSession.objects.filter(session_id=session_id).values("host_id", "opened_by").first(),
            "reading the session",
        )
        node = self.routing.pick_worker()
        if row is None or row["host_id"] is None or node is None:
            raise DispatchError(
                Failure.SESSION_NOT_FOUND, f"session '{session_id}' was lost and cannot be re-opened"
            )
        opened = self.send(
            node,
            "connect",
            {
                "host_id": row["host_id"],
                "owner": wire.dump(Owner(row["opened_by"])),
                "session_id": session_id,
                "reopen": True,
            },
            wait=float(settings.CONNECT_TIMEOUT) + _margin(),
        )
        wire.unwrap(opened)
        if call_id:
            with self._lock:
                self._call_nodes[call_id] = node
        done = wire.load(reply, wire.unwrap(self.send(node, task, kwargs, wait, progress)))
        return replace(done, reconnected=True)

    # -- sending ------------------------------------------------------------------------------

    def send(
        self, node: str, task: str, kwargs: dict[str, Any], wait: float, progress: ProgressFn | None = None
    ) -> wire.Envelope:
        """Run ``task`` on ``node`` and wait for its envelope, watching the node's heartbeat."""
        with metrics.broker_round_trip(task):
            return self._send_and_wait(node, task, kwargs, wait, progress)

    def _send_and_wait(
        self, node: str, task: str, kwargs: dict[str, Any], wait: float, progress: ProgressFn | None
    ) -> wire.Envelope:
        from celery.exceptions import TimeoutError as CeleryTimeout

        listener = self._results()
        if listener is None:
            return self._send_and_poll(node, task, kwargs, wait, progress)
        if not listener.ready():
            return failure(
                Failure.BROKER_UNREACHABLE,
                "the message broker or result store is unreachable; an admin must check it",
            )

        def on_progress(meta: dict[str, Any]) -> None:
            if progress is not None:
                progress(int(meta.get("stdout_bytes", 0)), int(meta.get("stderr_bytes", 0)))

        pending = listener.expect(on_progress if progress is not None else None)
        try:
            sent = self._send(node, task, kwargs, wait, task_id=pending.task_id)
            if isinstance(sent, dict):
                return sent  # the broker is unreachable

            def result(timeout: float) -> Any:
                try:
                    meta = pending.future.result(timeout=timeout)
                except TimeoutError:  # only the wait can time out here: no I/O in this thread
                    raise CeleryTimeout() from None
                return meta["result"] if meta.get("status") == "SUCCESS" else meta

            return self._await(node, task, wait, result)
        finally:
            listener.discard(pending)

    def _results(self) -> ResultListener | None:
        """The process's shared result listener (Redis results), else None (polling per call)."""
        if not self._listener_checked:
            from sshcontrol.redis_results import listener_for

            self._listener = listener_for(self.app)
            self._listener_checked = True
        return self._listener

    def _send(
        self, node: str, task: str, kwargs: dict[str, Any], wait: float, task_id: str | None = None
    ) -> Any:
        """Queue the task for ``node``: what ``send_task`` returns, or a failure envelope (a dict).

        With ``task_id`` the result is awaited through the shared listener, so Celery's
        ``AsyncResult`` (and its bookkeeping) is not built.
        """
        from kombu.exceptions import OperationalError

        from sshcontrol.redis_results import SentTask

        queue, declared = self._queue(node)
        try:
            sent = self.app.send_task(
                f"sshcontrol.{task}",
                kwargs=kwargs,
                queue=queue,
                expires=wait,
                retry=True,
                retry_policy=SEND_RETRY_POLICY,
                # Kombu re-declares the queue on every publish (a retry wrapper per message, though
                # the declaration itself is cached): once per node and process is enough.
                **({"declare": []} if declared else {}),
                # Celery would repr the arguments for monitoring tools: commands and stdin do
                # not belong there, and the repr costs time on every call.
                argsrepr="()",
                kwargsrepr="{...}",
                **({"task_id": task_id, "result_cls": SentTask} if task_id else {}),
            )
        except (OperationalError, OSError, RuntimeError) as exc:
            # RuntimeError: Celery's way of saying the result store cannot be reached.
            log.warning("broker unreachable: %s", exc)
            return failure(
                Failure.BROKER_UNREACHABLE, "the message broker is unreachable; an admin must check it"
            )
        if not declared:
            with self._lock:
                self._declared.add(node)
        return sent

    def _queue(self, node: str) -> tuple[Any, bool]:
        """The direct queue of ``node`` (built once) and whether this process declared it already."""
        from celery.utils.nodenames import worker_direct

        queue = self._queues.get(node)
        if queue is None:
            queue = self._queues.setdefault(node, worker_direct(node))
        return queue, node in self._declared

    def _send_and_poll(
        self, node: str, task: str, kwargs: dict[str, Any], wait: float, progress: ProgressFn | None
    ) -> wire.Envelope:
        """``send`` for result backends other than Redis (``rpc://`` on RabbitMQ): AsyncResult.get.

        The rpc backend already delivers results over one reply queue per calling thread,
        consumed by that thread; progress (PROGRESS states) arrives through ``on_message``.
        """
        sent = self._send(node, task, kwargs, wait)
        if isinstance(sent, dict):
            return sent  # the broker is unreachable

        def on_message(message: dict[str, Any]) -> None:
            meta = message.get("result")
            if progress is not None and message.get("status") == "PROGRESS" and isinstance(meta, dict):
                progress(int(meta.get("stdout_bytes", 0)), int(meta.get("stderr_bytes", 0)))

        def result(timeout: float) -> Any:
            return sent.get(timeout=timeout, on_message=on_message, propagate=False)

        return self._await(node, task, wait, result)

    def _await(self, node: str, task: str, wait: float, result: Callable[[float], Any]) -> wire.Envelope:
        """Wait for ``result`` in one-second steps, checking between steps that ``node`` still runs."""
        from celery.exceptions import TimeoutError as CeleryTimeout
        from kombu.exceptions import OperationalError

        from sshcontrol.redis_results import ResultsUnreachable

        deadline = time.monotonic() + wait
        while True:
            try:
                value = result(1.0)
            except CeleryTimeout:
                if holder_alive(node) is False and not self.answers_ping(node):
                    return failure(Failure.WORKER_LOST, f"the worker holding the session ({node}) stopped")
                if time.monotonic() > deadline:
                    return failure(
                        Failure.OUTCOME_UNKNOWN,
                        f"worker {node} did not answer within {wait:g} s; the outcome is unknown "
                        "(the call may have run in part)",
                    )
                continue
            except (OperationalError, OSError, RuntimeError, ResultsUnreachable) as exc:
                # Celery reports an unreachable result store as RuntimeError("Retry limit exceeded...").
                log.warning("result backend unreachable: %s", exc)
                # The task was sent: it may have run, in part or in full. Nobody can say which.
                return failure(
                    Failure.OUTCOME_UNKNOWN,
                    "the message broker or result store became unreachable after the call was sent; "
                    "the outcome is unknown (the call may have run in part). An admin must check the broker",
                )
            if isinstance(value, dict) and "ok" in value:
                return value
            log.error("task %s on %s failed: %r", task, node, value)
            return failure(Failure.INTERNAL_ERROR, "the worker failed to run the call; see its log")

    def answers_ping(self, node: str) -> bool:
        """A second opinion before a stale heartbeat ends a call: a worker whose heartbeat writes
        fail (its database connections killed) still answers over the broker; a dead one does not."""
        try:
            return bool(self.app.control.ping(destination=[node], timeout=PING_SECONDS))
        except Exception:  # the broker itself is away: the heartbeat's verdict stands
            return False


def _margin() -> float:
    return float(settings.DISPATCH_MARGIN_SECONDS)


def _default_wait() -> float:
    return float(settings.DEFAULT_TIMEOUT) + _margin()


def _transfer_wait() -> float:
    """A transfer may take long: it is bounded by the stream's stall timeout, not by one deadline."""
    return max(float(settings.MAX_TIMEOUT), float(settings.DEFAULT_TIMEOUT)) + _margin()
