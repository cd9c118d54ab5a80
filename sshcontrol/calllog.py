"""One log line and one metric observation per MCP tool call.

``observed`` wraps every tool. It opens a ``CallRecord`` in a context variable; the call's
thread sees the same record (``threads.in_thread`` copies the context), so the caller's
identity and the audited call (``HostCall``: host, audit id, status) fill it in as they
become known. When the tool returns, one INFO line on the ``sshcontrol.calls`` logger says
who called which tool on which host, the outcome, how long it took and the audit id.

The line carries names, ids and a status only: never the command, its output, stdin or
arguments, so no secret a caller passes or a host prints can reach the logs through it.
The audit id is also set on the current OpenTelemetry span (the SDK's ``tools/call``
span), when one is recording.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry import trace

from sshcontrol import metrics

log = logging.getLogger("sshcontrol.calls")


class ToolResult(Protocol):
    """What a tool returns, as far as the log needs it (the MCP SDK's ``CallToolResult``)."""

    is_error: bool


R = TypeVar("R", bound=ToolResult)


@dataclass
class CallRecord:
    """What is known of the running tool call; filled in from the call's thread."""

    tool: str
    client: str = ""
    host: str = ""
    audit_id: int | None = None
    status: str = ""  # the audit row's final status, once it has one


_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("sshcontrol_call", default=None)


def current() -> CallRecord | None:
    return _current.get()


def note_client(name: str) -> None:
    record = _current.get()
    if record is not None:
        record.client = name


def note_audit(audit_id: int, host: str) -> None:
    """The call's audit row was opened: remember it, and put its id on the current span."""
    record = _current.get()
    if record is not None:
        record.audit_id, record.host = audit_id, host
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("sshcontrol.audit_id", audit_id)


def note_status(status: str) -> None:
    record = _current.get()
    if record is not None:
        record.status = str(status)


def observed(tool: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Wrap a tool: time it, count it by outcome, and log one line when it ends."""

    @functools.wraps(tool)
    async def run(*args: Any, **kwargs: Any) -> R:
        record = CallRecord(tool=tool.__name__)
        token = _current.set(record)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await tool(*args, **kwargs)
            outcome = record.status or ("error" if result.is_error else "ok")
            return result
        except asyncio.CancelledError:
            outcome = record.status or "interrupted"
            raise
        except Exception:
            outcome = record.status or "error"
            raise
        finally:
            _current.reset(token)
            finished(record, outcome, time.perf_counter() - started)

    return run


def finished(record: CallRecord, status: str, seconds: float) -> None:
    metrics.record_call(record.tool, status, seconds)
    fields = {
        "client": record.client or "-",
        "tool": record.tool,
        "host": record.host or "-",
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "audit_id": record.audit_id,
    }
    log.info(
        "tool call client=%s tool=%s host=%s status=%s duration_ms=%.1f audit_id=%s",
        fields["client"],
        fields["tool"],
        fields["host"],
        fields["status"],
        fields["duration_ms"],
        fields["audit_id"] if fields["audit_id"] is not None else "-",
        extra={"call": fields},
    )
