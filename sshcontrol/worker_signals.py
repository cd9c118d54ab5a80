"""What a Celery worker does besides running tasks: its name, heartbeat, cancel command, shutdown.

Imported by ``celery -A sshcontrol worker`` through autodiscovery; the signal handlers
only fire inside a worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutting_down
from celery.worker.control import control_command
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from sshcontrol import jobs, orphans, tasks
from sshcontrol.dbretry import retrying
from sshcontrol.holders import current_worker, set_node_name
from sshcontrol.idle import start_idle_reaper
from sshcontrol.models import SshSession, WorkerHeartbeat
from sshlib.sessions import registry

log = logging.getLogger(__name__)

_stop = threading.Event()
# How long a stopping worker lets running commands finish before it cancels them.
SHUTDOWN_GRACE_SECONDS = 10.0
SHUTDOWN_CANCEL = (
    f"cancelled by sshcontrol: the worker running it was stopped (SIGTERM) and the command did not "
    f"finish within {SHUTDOWN_GRACE_SECONDS:g} s"
)


@celeryd_after_setup.connect
def _name_worker(sender: str, instance: Any, **kwargs: Any) -> None:
    set_node_name(sender)


def beat() -> None:
    WorkerHeartbeat.objects.update_or_create(
        node=current_worker(),
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "last_seen_at": timezone.now(),
            "stopped_at": None,
            "open_sessions": len(registry.all()),
            "running_calls": registry.running_count(),
        },
    )


def _heartbeat_loop() -> None:
    while not _stop.wait(float(settings.WORKER_HEARTBEAT_SECONDS)):
        try:
            close_old_connections()
            # A killed database connection must not make this worker look dead: reconnect and retry.
            retrying(beat, "writing the heartbeat", seconds=float(settings.WORKER_HEARTBEAT_SECONDS))
        except Exception:  # a missed beat is retried; a stale heartbeat is what marks us dead
            log.exception("heartbeat failed")


def _orphan_sweeper() -> None:
    """Kill remote commands left running by dead workers (its own thread: connecting may block)."""
    while True:
        try:
            close_old_connections()
            orphans.sweep()
        except Exception:
            log.exception("orphan sweep failed")
        jobs.housekeeping()  # jobs of dead workers marked lost; expired ones removed
        if _stop.wait(float(settings.WORKER_HEARTBEAT_SECONDS)):
            return


@worker_ready.connect
def _start(sender: Any = None, **kwargs: Any) -> None:
    node = current_worker()
    # Sessions recorded for this node name belong to a previous life of the worker: gone.
    SshSession.objects.filter(worker=node).mark_lost("its worker restarted")
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        node=node,
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "last_seen_at": now,
            "stopped_at": None,
        },
    )
    threading.Thread(target=_heartbeat_loop, name="sshcontrol-heartbeat", daemon=True).start()
    threading.Thread(target=_orphan_sweeper, name="sshcontrol-orphans", daemon=True).start()
    start_idle_reaper(_stop)
    log.info("worker %s ready", node)


@worker_shutting_down.connect
def _stop_worker(sig: str = "", how: str = "", exitcode: int = 0, **kwargs: Any) -> None:
    """Warm shutdown: running commands get a grace period, then are cancelled; sessions close."""

    def finish() -> None:
        close_old_connections()
        registry.wait_for_calls(SHUTDOWN_GRACE_SECONDS)
        registry.cancel_all(SHUTDOWN_CANCEL)
        registry.wait_for_calls(3.0)
        _stop.set()
        node = current_worker()
        registry.close_all()
        # Lost, not closed: like after a crash, the next call re-opens each on a live worker
        # under the same id, instead of telling the client to connect again.
        retrying(
            lambda: SshSession.objects.filter(worker=node).mark_lost("its worker stopped"),
            "marking the worker's sessions lost",
        )
        WorkerHeartbeat.objects.filter(node=node).update(stopped_at=timezone.now())

    # Run beside Celery's own shutdown so the tasks that are finishing can still report.
    threading.Thread(target=finish, name="sshcontrol-shutdown", daemon=False).start()


@control_command(args=[("call_id", str)], signature="<call_id>")
def sshcontrol_cancel(state: Any, call_id: str) -> dict[str, bool]:
    """Kill the remote process of a running call on this worker (revoke(terminate) can't, with threads)."""
    return {"cancelled": tasks.cancel(call_id)}
