"""Task results on Redis: the store the workers write, and one shared listener per sending process.

Celery's own way to wait (``AsyncResult.get``) costs every call a SUBSCRIBE to the task's
channel, a GET of its key, an UNSUBSCRIBE, and a turn at reading one pub/sub socket that all
waiting threads share under a lock. Here a process has a single listener thread with one
pattern subscription covering the task ids it generates (``celery-task-meta-<prefix>*``);
each call registers a ``Future`` under its task id before sending, and the listener resolves
it when the worker publishes the result. The calling thread only waits on its future.

The listener is a thread rather than an asyncio task because the dispatcher is called from
the tool calls' worker threads (``sshcontrol/mcp/threads.py``), not from the event loop, and
it must also serve processes without one (the admin, management commands).

Nothing is lost between subscribing and sending: the workers store each final result under
its key before publishing it, and after every (re)subscription the listener reads the keys
of all calls still waiting (one MGET), so a result published while the subscription was
down is still delivered.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, states
from celery.backends.redis import RedisBackend
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# A custom state: ``execute`` reports output progress with it (see sshcontrol/tasks.py).
PROGRESS = "PROGRESS"

# How long a lost result store may take to come back before the calls waiting on it fail.
RECONNECT_SECONDS = 3.0
# How long a new call waits for the listener's subscription before saying the store is down.
READY_SECONDS = 3.0

MetaCallback = Callable[[dict[str, Any]], None]
Meta = dict[str, Any]


class ResultsUnreachable(Exception):
    """The result store cannot be reached, so a call cannot learn its task's outcome."""


class RedisResults(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend without the round trips sshcontrol's calls never need.

    Selected in ``sshcontrol/celery.py`` for ``redis://`` result stores, in the workers (which
    store) and in the senders (which listen) alike.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        # No per-task SUBSCRIBE: the process's ResultListener covers every task id it sends.
        return None

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        # Celery first GETs the stored state so that a redelivered task cannot overwrite a
        # SUCCESS. sshcontrol tasks are acknowledged before they run and never retried or
        # redelivered, so that read would be one wasted round trip per task and per progress
        # report.
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = _text(task_id)
        key = self.get_key_for_task(task_id)
        value = self.encode(meta)
        if state == PROGRESS:
            # Progress is only of use live: publish it, do not store it.
            self.ensure(self.client.publish, (key, value))
        else:
            self._set_with_state(key, value, state)
        return result

    def _set(self, key: str, value: bytes, expires: int | None = None) -> None:
        # As Celery's, in one round trip, but without MULTI/EXEC: the two commands need no
        # atomicity, only their order (stored before published, see ResultListener._catch_up),
        # which one connection's pipeline keeps.
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(key, value, ex=expires or self.expires)
            pipe.publish(key, value)
            pipe.execute()


@dataclass(eq=False)
class AwaitedResult:
    """A sent task whose result a call is waiting for."""

    task_id: str
    progress: MetaCallback | None = None
    future: Future[Meta] = field(default_factory=Future)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class ResultListener:
    """One thread per process, subscribed to the result channels of the task ids it hands out."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        # Task ids are "<random prefix><counter>": unique, and cheap to match by pattern.
        self.prefix = f"sshc-{secrets.token_hex(8)}-"
        self._ids = itertools.count()
        backend = app.backend
        # The key (and channel) of a task id: Celery's prefix, with any global key prefix.
        self._key_prefix = _text(backend.get_key_for_task("x"))[:-1]
        self.pattern = _glob_escape(self._key_prefix + self.prefix) + "*"
        self._pending: dict[str, AwaitedResult] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- the calls' side ------------------------------------------------------------------------

    def ready(self, timeout: float = READY_SECONDS) -> bool:
        """Start the listener if needed; whether it is subscribed (False: the store is down)."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="sshcontrol-results", daemon=True)
                    self._thread.start()
        return self._subscribed.wait(timeout)

    def expect(self, progress: MetaCallback | None = None) -> AwaitedResult:
        """Register a new task id; call before sending the task so its result cannot be missed."""
        pending = AwaitedResult(f"{self.prefix}{next(self._ids)}", progress)
        with self._lock:
            self._pending[pending.task_id] = pending
        return pending

    def discard(self, pending: AwaitedResult) -> None:
        """Stop waiting for a task (answered, given up, or never sent)."""
        with self._lock:
            self._pending.pop(pending.task_id, None)

    def stop(self) -> None:
        self._stop.set()

    # -- the listener thread --------------------------------------------------------------------

    def _run(self) -> None:
        backend = self.app.backend  # Celery's backends are per thread: this one is ours alone
        lost_at: float | None = None
        pause = 0.1
        while not self._stop.is_set():
            try:
                self._listen(backend)
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    log.warning("result store unreachable (%s); reconnecting", exc)
                elif now - lost_at >= RECONNECT_SECONDS:
                    self._fail_pending(exc)
                self._stop.wait(pause)
                pause = min(1.0, pause * 2)
                continue
            except Exception:  # never let the thread die: every distributed call depends on it
                log.exception("result listener failed; restarting it")
                self._subscribed.clear()
                self._stop.wait(1.0)
                continue
            lost_at, pause = None, 0.1

    def _listen(self, backend: Any) -> None:
        pubsub = backend.client.pubsub()
        try:
            pubsub.psubscribe(self.pattern)
            deadline = time.monotonic() + RECONNECT_SECONDS
            # Wait for Redis to confirm: only then are later publishes sure to reach us.
            while True:
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message["type"] == "psubscribe":
                    break
                if time.monotonic() > deadline:
                    raise OSError("no confirmation of the result subscription")
            self._catch_up(backend)
            self._subscribed.set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "pmessage":
                    self._on_message(backend, _text(message["channel"]), message["data"])
                elif message["type"] == "psubscribe":
                    # redis-py reconnected on its own and subscribed again: results published
                    # in between were missed, read them from their keys.
                    self._catch_up(backend)
        finally:
            self._subscribed.clear()
            with contextlib.suppress(RedisError, OSError):
                pubsub.close()

    def _catch_up(self, backend: Any) -> None:
        """Deliver results stored while the subscription was down."""
        with self._lock:
            waiting = list(self._pending)
        if not waiting:
            return
        values = backend.client.mget([self._key_prefix + task_id for task_id in waiting])
        for task_id, value in zip(waiting, values, strict=True):
            if value is not None:
                self._deliver(task_id, backend.decode_result(value))

    def _on_message(self, backend: Any, channel: str, data: bytes) -> None:
        task_id = channel[len(self._key_prefix) :]
        with self._lock:
            mine = task_id in self._pending
        if mine:  # decode only what a call is waiting for
            self._deliver(task_id, backend.decode_result(data))

    def _deliver(self, task_id: str, meta: Meta) -> None:
        status = meta.get("status")
        if status in states.READY_STATES:
            with self._lock:
                pending = self._pending.pop(task_id, None)
            if pending is not None and not pending.future.done():
                pending.future.set_result(meta)
        elif status == PROGRESS:
            with self._lock:
                pending = self._pending.get(task_id)
            if pending is not None and pending.progress is not None and isinstance(meta.get("result"), dict):
                try:
                    pending.progress(meta["result"])
                except Exception:  # a failing progress report must not stop other calls' results
                    log.exception("progress callback failed")

    def _fail_pending(self, exc: BaseException) -> None:
        with self._lock:
            failed = list(self._pending.values())
            self._pending.clear()
        for pending in failed:
            if not pending.future.done():
                pending.future.set_exception(ResultsUnreachable(str(exc)))


_listener: ResultListener | None = None
_listener_lock = threading.Lock()


def listener_for(app: Celery) -> ResultListener | None:
    """This process's shared listener, or None when results do not go through Redis."""
    global _listener
    if not isinstance(app.backend, RedisResults):
        return None
    if _listener is None:
        with _listener_lock:
            if _listener is None:
                _listener = ResultListener(app)
    return _listener


class SentTask:
    """What ``send_task`` returns when the result is awaited through the listener.

    Celery's ``AsyncResult`` would register the task with Celery's own result consumer and
    unregister it when garbage-collected: work for a result nobody reads through it.
    """

    __slots__ = ("id", "ignored")

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.ignored: bool | None = None
