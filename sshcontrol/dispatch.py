"""How a tool call reaches the process that holds its SSH session.

Embedded (no ``SSHCONTROL_BROKER_URL``): that process is this one, and the task functions
of ``sshcontrol.tasks`` run directly in the calling thread: no broker, no serialisation.

Distributed: sessions live in Celery workers. Opening a session goes to the live worker
holding the fewest sessions; every later call for the session goes to the direct queue
of the worker recorded on its row (``<node>.dq2``). Messages carry ``expires`` so work
queued for a dead worker never runs late; a dead holder (stale heartbeat) has its session
re-opened on a live worker under the same id, audited as a reconnect.

Results come back through the process's shared listener when they are stored in Redis
(``sshcontrol/redis_results.py``): the calling thread only waits on a future. With ``rpc://``
(RabbitMQ) Celery already delivers them to a reply queue of the calling thread, and
``AsyncResult.get`` is kept.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.db import connection

from sshcontrol import holders, metrics, tasks
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.models import SshSession

if TYPE_CHECKING:
    from sshcontrol.redis_results import ResultListener

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
Envelope = tasks.Envelope

TASKS: dict[str, Callable[..., Envelope]] = {
    "connect": tasks.connect,
    "execute": tasks.execute,
    "upload": tasks.upload,
    "download": tasks.download,
    "list_files": tasks.list_files,
    "disconnect": tasks.disconnect,
    "probe": tasks.probe,
}

# A broker that is down gives a clear error within seconds instead of a hang.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}

# How long a worker whose heartbeat is stale gets to answer a ping before its calls are given up.
PING_SECONDS = 0.5

# How long the set of live workers is reused before the heartbeat table is read again.
LIVE_CACHE_SECONDS = 0.5

# Session-bound tasks whose work may be re-run on a re-opened session (nothing ran yet).
_SESSION_TASKS = {"execute", "upload", "download", "list_files"}


def failure(kind: str, message: str) -> Envelope:
    return {"ok": False, "kind": kind, "message": message}


class Dispatcher(Protocol):
    embedded: bool  # True when sessions live in this process

    def call(
        self, task: str, kwargs: dict[str, Any], *, call_id: str = "", progress: ProgressFn | None = None
    ) -> Envelope: ...

    def cancel(self, call_id: str) -> None: ...

    def alive(self, sessions: list[tuple[str, str]]) -> dict[str, bool | None]:
        """Liveness of (session_id, worker) pairs: True / False, None when it cannot be told."""
        ...


class EmbeddedDispatcher:
    """Runs tasks in this process, in the caller's thread."""

    embedded = True

    def call(
        self, task: str, kwargs: dict[str, Any], *, call_id: str = "", progress: ProgressFn | None = None
    ) -> Envelope:
        fn = TASKS[task]
        if task == "execute":
            return fn(**kwargs, call_id=call_id, progress=progress)
        return fn(**kwargs)

    def cancel(self, call_id: str) -> None:
        tasks.cancel(call_id)

    def alive(self, sessions: list[tuple[str, str]]) -> dict[str, bool | None]:
        here = holders.current_worker()
        result: dict[str, bool | None] = {}
        mine = [sid for sid, worker in sessions if worker == here]
        if mine:
            envelope = tasks.probe(session_ids=mine)
            result.update(envelope["result"]["alive"] if envelope["ok"] else {})
        for sid, worker in sessions:
            if worker != here:
                result[sid] = holders.worker_alive(worker)
        return result


class CeleryDispatcher:
    """Sends tasks to the Celery worker that holds (or will hold) the session."""

    embedded = False

    def __init__(self) -> None:
        from sshcontrol.celery import app

        self.app = app
        self._call_nodes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._live_at = float("-inf")
        self._listener: ResultListener | None = None
        self._queues: dict[str, Any] = {}
        self._declared: set[str] = set()
        self._listener_checked = False

    # -- routing ------------------------------------------------------------------------------

    def pick_worker(self) -> str | None:
        """The live worker holding the fewest connected sessions (ties: by name, for determinism)."""
        return retrying(self._pick_worker, "choosing a worker")

    def _pick_worker(self) -> str | None:
        live = holders.live_workers()
        if not live:
            return None
        counts = {node: 0 for node in live}
        for worker in SshSession.objects.filter(
            state=SshSession.State.CONNECTED, worker__in=live
        ).values_list("worker", flat=True):
            counts[worker] += 1
        return min(live, key=lambda node: (counts[node], node))

    def is_live(self, node: str) -> bool:
        """Whether a worker's heartbeat is fresh; cached briefly so each call does not pay a query."""
        now = time.monotonic()
        if now - self._live_at > LIVE_CACHE_SECONDS:
            self._live = set(retrying(holders.live_workers, "reading the worker heartbeats"))
            self._live_at = now
        return node in self._live

    def holder(self, session_id: str) -> str | None:
        return retrying(lambda: self._holder(session_id), "finding the session's worker")

    def _holder(self, session_id: str) -> str | None:
        # Plain SQL: this runs on every distributed call, and the ORM's compiling costs ~0.3 ms.
        q = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {q('worker')} FROM {q(SshSession._meta.db_table)} WHERE {q('session_id')} = %s",  # noqa: S608
                [session_id],
            )
            found = cursor.fetchone()
        return str(found[0]) if found else None

    # -- sending ------------------------------------------------------------------------------

    def send(
        self, node: str, task: str, kwargs: dict[str, Any], wait: float, progress: ProgressFn | None = None
    ) -> Envelope:
        """Run ``task`` on ``node`` and wait for its envelope, watching the node's heartbeat."""
        with metrics.broker_round_trip(task):
            return self._send_and_wait(node, task, kwargs, wait, progress)

    def _send_and_wait(
        self, node: str, task: str, kwargs: dict[str, Any], wait: float, progress: ProgressFn | None
    ) -> Envelope:
        from celery.exceptions import TimeoutError as CeleryTimeout

        listener = self._results()
        if listener is None:
            return self._send_and_poll(node, task, kwargs, wait, progress)
        if not listener.ready():
            return failure(
                "broker_unreachable",
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
            return failure("broker_unreachable", "the message broker is unreachable; an admin must check it")
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
    ) -> Envelope:
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

    def _await(self, node: str, task: str, wait: float, result: Callable[[float], Any]) -> Envelope:
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
                    return failure("worker_lost", f"the worker holding the session ({node}) stopped")
                if time.monotonic() > deadline:
                    return failure(
                        "outcome_unknown",
                        f"worker {node} did not answer within {wait:g} s; the outcome is unknown "
                        "(the call may have run in part)",
                    )
                continue
            except (OperationalError, OSError, RuntimeError, ResultsUnreachable) as exc:
                # Celery reports an unreachable result store as RuntimeError("Retry limit exceeded...").
                log.warning("result backend unreachable: %s", exc)
                # The task was sent: it may have run, in part or in full. Nobody can say which.
                return failure(
                    "outcome_unknown",
                    "the message broker or result store became unreachable after the call was sent; "
                    "the outcome is unknown (the call may have run in part). An admin must check the broker",
                )
            if isinstance(value, dict) and "ok" in value:
                return value
            log.error("task %s on %s failed: %r", task, node, value)
            return failure("internal_error", "the worker failed to run the call; see its log")

    def answers_ping(self, node: str) -> bool:
        """A second opinion before a stale heartbeat ends a call: a worker whose heartbeat writes
        fail (its database connections killed) still answers over the broker; a dead one does not."""
        try:
            return bool(self.app.control.ping(destination=[node], timeout=PING_SECONDS))
        except Exception:  # the broker itself is away: the heartbeat's verdict stands
            return False

    # -- the Dispatcher interface ---------------------------------------------------------------

    def call(
        self, task: str, kwargs: dict[str, Any], *, call_id: str = "", progress: ProgressFn | None = None
    ) -> Envelope:
        margin = float(settings.DISPATCH_MARGIN_SECONDS)
        if task == "connect" and not kwargs.get("session_id"):
            node = self.pick_worker()
            if node is None:
                return failure("no_worker", "no sshcontrol worker is running (celery -A sshcontrol worker)")
            return self.send(node, task, kwargs, wait=float(settings.CONNECT_TIMEOUT) + margin)
        session_id = str(kwargs["session_id"])
        node = self.holder(session_id)
        if node is None:
            return failure("session_not_found", f"unknown session '{session_id}'")
        if (
            task == "disconnect"
            and retrying(lambda: holders.worker_alive(node), "reading heartbeats") is False
        ):
            return tasks.disconnect(**kwargs)  # nothing left to close remotely: just record it
        wait = float(kwargs.get("timeout") or settings.DEFAULT_TIMEOUT) + margin
        extra = {"call_id": call_id} if task == "execute" else {}
        if call_id:
            with self._lock:
                self._call_nodes[call_id] = node
        kwargs = {**kwargs, **extra}
        try:
            if task in _SESSION_TASKS and not self.is_live(node):
                # The holder is gone: re-open the session on a live worker instead of queueing
                # work for a dead one.
                return self._reopen_and_retry(session_id, task, kwargs, wait, progress, call_id)
            envelope = self.send(node, task, kwargs, wait, progress)
            if task in _SESSION_TASKS and not envelope["ok"] and envelope["kind"] == "session_not_found":
                envelope = self._reopen_and_retry(session_id, task, kwargs, wait, progress, call_id)
            elif task in _SESSION_TASKS and not envelope["ok"] and envelope["kind"] == "worker_lost":
                # The holder died under this call: its command may have partly run, so it is not
                # re-run; the session is re-opened elsewhere on its next call.
                retrying(
                    lambda: SshSession.objects.filter(session_id=session_id, worker=node).update(
                        state=SshSession.State.LOST, close_reason=f"worker {node} stopped"
                    ),
                    "marking the session lost",
                )
            return envelope
        finally:
            if call_id:
                with self._lock:
                    self._call_nodes.pop(call_id, None)

    def _reopen_and_retry(
        self,
        session_id: str,
        task: str,
        kwargs: dict[str, Any],
        wait: float,
        progress: ProgressFn | None,
        call_id: str,
    ) -> Envelope:
        """The holder no longer has the session (died or restarted): re-open it on a live worker."""
        row = retrying(
            lambda: SshSession.objects.filter(session_id=session_id).values("host_id", "opened_by").first(),
            "reading the session",
        )
        node = self.pick_worker()
        if row is None or row["host_id"] is None or node is None:
            return failure("session_not_found", f"session '{session_id}' was lost and cannot be re-opened")
        opened = self.send(
            node,
            "connect",
            {"host_id": row["host_id"], "actor": row["opened_by"], "session_id": session_id, "reopen": True},
            wait=float(settings.CONNECT_TIMEOUT) + float(settings.DISPATCH_MARGIN_SECONDS),
        )
        if not opened["ok"]:
            return opened
        if call_id:
            with self._lock:
                self._call_nodes[call_id] = node
        envelope = self.send(node, task, kwargs, wait, progress)
        if envelope["ok"]:
            envelope["result"]["reconnected"] = True
        return envelope

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
            if retrying(functools.partial(holders.worker_alive, node), "reading heartbeats") is False:
                result.update(dict.fromkeys(sids, False))
                continue
            envelope = self.send(node, "probe", {"session_ids": sids}, wait=5.0)
            if envelope["ok"]:
                result.update({sid: bool(v) for sid, v in envelope["result"]["alive"].items()})
            else:
                result.update(dict.fromkeys(sids, None))
        return result


def holder_alive(node: str) -> bool | None:
    """The holder's heartbeat while a call waits on it; None (keep waiting) if the database is away.

    The wait goes on in one-second steps: a database outage must neither end a call whose
    command runs fine nor hold up the result that arrives meanwhile.
    """
    try:
        return retrying(lambda: holders.worker_alive(node), "reading the worker heartbeat", seconds=1.0)
    except DatabaseUnavailable:
        return None


_dispatcher: Dispatcher | None = None
_dispatcher_lock = threading.Lock()


def get_dispatcher() -> Dispatcher:
    global _dispatcher
    if _dispatcher is None:
        with _dispatcher_lock:
            if _dispatcher is None:
                _dispatcher = CeleryDispatcher() if settings.BROKER_URL else EmbeddedDispatcher()
    return _dispatcher
