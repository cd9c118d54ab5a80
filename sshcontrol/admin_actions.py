"""Host operations an admin starts from the browser, on the same audited path as an MCP call.

"Test connection" is an ``ssh_execute`` of ``true``: it resolves the host, opens the
audit row, dispatches connect and execute to the process that holds sessions, and
completes the row exactly as the MCP tool does, so the audit trail cannot tell an
admin's check from a model's command except by its actor (``admin:<username>``) and
transport (``admin``). The session it opens is closed again right after.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from django.conf import settings

from audit.models import AuditEvent
from hosts.access import Permission
from hosts.models import Host
from sshcontrol.caller import Caller
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.hostcall import AuditFields, CallRefused, HostCall, host_call
from sshcontrol.taskspec import CommandSpec, DispatchError

Status = AuditEvent.Status

TEST_COMMAND = "true"


@dataclass(frozen=True)
class TestResult:
    """What an admin sees after a connection test."""

    __test__ = False  # not a pytest test class, despite the name

    host: str
    ok: bool
    exit_status: int | None
    duration_ms: int  # wall time of the whole test: connect and run
    error: str  # one line, e.g. an unknown host key; "" when ok
    audit_id: int  # the audit row of the test (0 if none could be written)

    def summary(self) -> str:
        if self.ok:
            return (
                f"{self.host}: connected and ran '{TEST_COMMAND}' (exit status {self.exit_status}) "
                f"in {self.duration_ms} ms"
            )
        if self.exit_status is not None:
            return (
                f"{self.host}: '{TEST_COMMAND}' exited with status {self.exit_status} after "
                f"{self.duration_ms} ms"
            )
        return f"{self.host}: {self.error}"


def test_connection(host: Host, username: str) -> TestResult:
    """Open a new session on ``host``, run ``true``, close the session; audited as ``ssh_execute``."""
    started = time.monotonic()
    spec = CommandSpec(TEST_COMMAND, None, float(settings.DEFAULT_TIMEOUT))
    event_id = 0
    try:
        with host_call(
            "ssh_execute",
            Caller.admin(username),
            host_name=host.name,
            permission=Permission.EXECUTE,
            audit=AuditFields.of(spec),
        ) as call:
            event_id = call.event_id
            try:
                # A fresh session, never one the admin left open: the test is of connecting.
                call.open_new()
                executed = call.execute(spec)
                call.complete_execution(executed)
            finally:
                _close_opened(call)
            if executed.run.timed_out:
                raise CallRefused(f"'{TEST_COMMAND}' did not finish within {settings.DEFAULT_TIMEOUT} s")
    except CallRefused as exc:
        return TestResult(host.name, False, None, _ms(started), exc.message, exc.event_id or event_id)
    exit_status = executed.run.exit_status
    return TestResult(host.name, exit_status == 0, exit_status, _ms(started), "", event_id)


def _close_opened(call: HostCall) -> None:
    if call.details.get("session_opened"):
        with contextlib.suppress(DispatchError):  # the test's own result is what the admin needs
            get_dispatcher().disconnect(call.open_session_id, "closed after the admin's test")


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
