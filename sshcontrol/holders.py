"""Which process holds a session: its stable name, and whether it still runs.

On the embedded default the MCP server process holds its sessions and is named
``embedded:<machine>:<pid>:<start>``. A Celery worker is named by its node name
(``w1@host``), set when the worker starts, and proves it is alive with a heartbeat row.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from audit.process import current_process_key, is_alive

EMBEDDED_PREFIX = "embedded:"

_node_name: str | None = None


def set_node_name(name: str) -> None:
    """Called once in a Celery worker, before it takes tasks."""
    global _node_name
    _node_name = name


def current_worker() -> str:
    return _node_name or EMBEDDED_PREFIX + current_process_key()


def heartbeat_stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=settings.WORKER_HEARTBEAT_SECONDS * 3)


def worker_alive(worker: str) -> bool | None:
    """Whether the process holding sessions under this name still runs.

    True / False when it can be told (an embedded process on this machine, or a Celery
    worker by its heartbeat); None for an embedded process on another machine.
    """
    if worker.startswith(EMBEDDED_PREFIX):
        return is_alive(worker[len(EMBEDDED_PREFIX) :])
    from sshcontrol.models import WorkerHeartbeat

    cutoff = timezone.now() - heartbeat_stale_after()
    fresh = WorkerHeartbeat.objects.filter(stopped_at__isnull=True, last_seen_at__gte=cutoff)
    return fresh.filter(node=worker).exists()


def live_workers() -> list[str]:
    from sshcontrol.models import WorkerHeartbeat

    cutoff = timezone.now() - heartbeat_stale_after()
    return list(
        WorkerHeartbeat.objects.filter(stopped_at__isnull=True, last_seen_at__gte=cutoff).values_list(
            "node", flat=True
        )
    )


def mark_dead_embedded_sessions() -> int:
    """Sessions of embedded server processes that are gone can never be used again: mark them lost."""
    from sshcontrol.models import SshSession

    here = current_worker()
    dead = [
        row.session_id
        for row in SshSession.objects.connected()
        .filter(worker__startswith=EMBEDDED_PREFIX)
        .exclude(worker=here)
        .only("session_id", "worker")
        if worker_alive(row.worker) is False
    ]
    return SshSession.objects.filter(session_id__in=dead).mark_lost("its server process stopped")


def close_sessions_of_this_process(reason: str) -> int:
    from sshcontrol.models import SshSession

    return SshSession.objects.filter(worker=current_worker()).connected().close(reason)
