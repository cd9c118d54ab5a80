"""The task requests and replies as JSON, for the Celery edge only.

One pydantic ``TypeAdapter`` per dataclass, built once: it dumps a dataclass (nested ones
and ``Base64Bytes`` fields included) to JSON-safe values and validates them back into the
same dataclass on the other side. The embedded default never comes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter

from sshcontrol.taskspec import DispatchError, Executed, Failure, StillRunning

T = TypeVar("T")


_adapters: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[T]) -> TypeAdapter[T]:
    adapter = _adapters.get(cls)
    if adapter is None:  # built once per type: building one costs far more than using it
        adapter = _adapters.setdefault(cls, TypeAdapter(cls))
    return adapter


def dump(value: object) -> Any:
    """A dataclass as JSON-safe values."""
    return _adapter(type(value)).dump_python(value, mode="json")


def load(cls: type[T], data: Any) -> T:
    """JSON-safe values back into ``cls``."""
    value: T = _adapter(cls).validate_python(data)
    return value


@dataclass(frozen=True)
class ExecutedOrJob:
    """``execute_job``'s reply on the wire: either shape (told apart by their fields)."""

    reply: Executed | StillRunning
    reconnected: bool = False


# The envelope a Celery task returns: {"ok": true, "result": ...} or {"ok": false, "kind", "message"}.
Envelope = dict[str, Any]


def ok(result: Any) -> Envelope:
    return {"ok": True, "result": result}


def failed(exc: DispatchError) -> Envelope:
    return {"ok": False, "kind": exc.kind.value, "message": exc.message}


def unwrap(envelope: Envelope) -> Any:
    """The result of an envelope, or its failure raised as ``DispatchError``."""
    if envelope["ok"]:
        return envelope["result"]
    try:
        kind = Failure(envelope["kind"])
    except ValueError:
        kind = Failure.INTERNAL_ERROR
    raise DispatchError(kind, str(envelope["message"]))
