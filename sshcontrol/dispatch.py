"""How a tool call reaches the process that holds its SSH session.

On the embedded default that process is this one: the task functions of
``sshcontrol.tasks`` run directly in the calling thread, with no broker and no
serialisation. Distributed mode (Celery workers) plugs in behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from sshcontrol import tasks

ProgressFn = Callable[[int, int], None]

TASKS: dict[str, Callable[..., tasks.Envelope]] = {
    "connect": tasks.connect,
    "execute": tasks.execute,
    "upload": tasks.upload,
    "download": tasks.download,
    "list_files": tasks.list_files,
    "disconnect": tasks.disconnect,
    "probe": tasks.probe,
}


class Dispatcher(Protocol):
    embedded: bool  # True when sessions live in this process

    def call(
        self, task: str, kwargs: dict[str, Any], *, call_id: str = "", progress: ProgressFn | None = None
    ) -> tasks.Envelope: ...

    def cancel(self, call_id: str) -> None: ...


class EmbeddedDispatcher:
    """Runs tasks in this process, in the caller's thread."""

    embedded = True

    def call(
        self, task: str, kwargs: dict[str, Any], *, call_id: str = "", progress: ProgressFn | None = None
    ) -> tasks.Envelope:
        fn = TASKS[task]
        if task == "execute":
            return fn(**kwargs, call_id=call_id, progress=progress)
        return fn(**kwargs)

    def cancel(self, call_id: str) -> None:
        tasks.cancel(call_id)


_dispatcher: Dispatcher | None = None


def get_dispatcher() -> Dispatcher:
    global _dispatcher
    if _dispatcher is None:
        if settings.BROKER_URL:
            raise ImproperlyConfigured(
                "SSHCONTROL_BROKER_URL is set, but the distributed (Celery) mode is not available in this "
                "version; unset it to run embedded"
            )
        _dispatcher = EmbeddedDispatcher()
    return _dispatcher
