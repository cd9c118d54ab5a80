"""Bringing session rows in line with reality when a server process starts or stops."""

from __future__ import annotations

from django.utils import timezone

from sshcontrol.holders import EMBEDDED_PREFIX, current_worker, worker_alive
from sshcontrol.models import SshSession


def mark_dead_embedded_sessions() -> int:
    """Sessions of embedded server processes that are gone can never be used again: mark them lost."""
    here = current_worker()
    dead = [
        row.session_id
        for row in SshSession.objects.filter(
            state=SshSession.State.CONNECTED, worker__startswith=EMBEDDED_PREFIX
        )
        .exclude(worker=here)
        .only("session_id", "worker")
        if worker_alive(row.worker) is False
    ]
    return SshSession.objects.filter(session_id__in=dead).update(
        state=SshSession.State.LOST, closed_at=timezone.now(), close_reason="its server process stopped"
    )


def close_sessions_of_this_process(reason: str) -> int:
    return SshSession.objects.filter(worker=current_worker(), state=SshSession.State.CONNECTED).update(
        state=SshSession.State.CLOSED, closed_at=timezone.now(), close_reason=reason
    )
