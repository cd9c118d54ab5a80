"""Host operations an admin starts from the browser, on the same audited path as an MCP call.

"Test connection" is an ``ssh_execute`` of ``true``: it resolves the host, opens the
audit row, dispatches connect and execute to the process that holds sessions, and
completes the row exactly as the MCP tool does, so the audit trail cannot tell an
admin's check from a model's command except by its actor (``admin:<username>``) and
transport (``admin``). The session it opens is closed again right after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from mcp.server.mcpserver.exceptions import ToolError

from audit.models import AuditEvent
from hosts.models import Host
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.mcp.calls import HostCall, run_guarded
from sshcontrol.mcp.identity import Caller

Status = AuditEvent.Status

TEST_COMMAND = "true"
TRANSPORT = "admin"


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


def admin_caller(username: str) -> Caller:
    return Caller(actor=f"admin:{username}", transport=TRANSPORT)


def test_connection(host: Host, username: str) -> TestResult:
    """Open a new session on ``host``, run ``true``, close the session; audited as ``ssh_execute``."""
    started = time.monotonic()
    call = HostCall(
        "ssh_execute",
        admin_caller(username),
        session_id=None,
        host_name=host.name,
        audit_fields={"command": TEST_COMMAND, "working_directory": ""},
    )

    def body(call: HostCall) -> int:
        # A fresh session, never one the admin left open: the test is of connecting.
        call.connect(reuse=False)
        r = call.dispatch(
            "execute",
            {
                "command": TEST_COMMAND,
                "working_directory": None,
                "timeout": float(settings.DEFAULT_TIMEOUT),
                "stdin_b64": None,
            },
        )
        call.complete_execution(r)
        exit_status: int = r["exit_status"]
        if r["timed_out"]:
            raise ToolError(f"'{TEST_COMMAND}' did not finish within {settings.DEFAULT_TIMEOUT} s")
        return exit_status

    try:
        try:
            exit_status = run_guarded(call, body)
        finally:
            if call.details.get("session_opened") and call.session_id:
                get_dispatcher().call(
                    "disconnect", {"session_id": call.session_id, "reason": "closed after the admin's test"}
                )
    except ToolError as exc:
        return TestResult(host.name, False, None, _ms(started), str(exc), call.event_id)
    return TestResult(host.name, exit_status == 0, exit_status, _ms(started), "", call.event_id)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
