"""Per-client limits: calls running at once, calls per minute, open SSH sessions."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from audit.models import AuditEvent
from hosts.access import ClientAccess
from sshcontrol.models import SshSession


class LimitExceeded(PermissionError):
    """A per-client limit was reached; the message says which and what to do."""


def check_limits(access: ClientAccess, opening_session: bool) -> None:
    """Raise LimitExceeded when the client is at one of its limits (checked before the call's row).

    Counted from the audit log and the session table, so the limits hold across every server
    process; two calls checked at the same instant may both pass (a soft limit).
    """
    limits = access.limits
    if limits.concurrent_calls is not None:
        running = AuditEvent.objects.filter(client=access.name, status=AuditEvent.Status.RUNNING).count()
        if running >= limits.concurrent_calls:
            raise LimitExceeded(
                f"client '{access.name}' already has {running} calls running (limit "
                f"{limits.concurrent_calls}); wait for one to finish"
            )
    if limits.calls_per_minute is not None:
        since = timezone.now() - timedelta(seconds=60)
        recent = AuditEvent.objects.filter(client=access.name, started_at__gte=since).count()
        if recent >= limits.calls_per_minute:
            raise LimitExceeded(
                f"client '{access.name}' made {recent} calls in the last minute (limit "
                f"{limits.calls_per_minute}); slow down and retry in a minute"
            )
    if opening_session and limits.open_sessions is not None:
        open_now = SshSession.objects.filter(
            client_id=access.client_id, state=SshSession.State.CONNECTED
        ).count()
        if open_now >= limits.open_sessions:
            raise LimitExceeded(
                f"client '{access.name}' has {open_now} SSH sessions open (limit {limits.open_sessions}); "
                "close one with ssh_disconnect or reuse it"
            )
