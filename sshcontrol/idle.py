"""Closing sessions nobody used for ``SSHCONTROL_SESSION_IDLE_TIMEOUT`` seconds.

Runs in the process that holds the sessions (``mcp_serve`` embedded, or each Celery
worker), because only that process can close the connections.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from sshcontrol import outputs
from sshcontrol.models import SshSession
from sshlib.sessions import registry

log = logging.getLogger(__name__)


def close_idle_sessions(now: float | None = None) -> list[str]:
    """Close sessions idle longer than the limit; mark their rows closed. Returns their ids."""
    limit = float(settings.SESSION_IDLE_TIMEOUT)
    now = time.time() if now is None else now
    closed = []
    for session in registry.all():
        if now - session.last_used_at > limit and registry.close(session.session_id):
            closed.append(session.session_id)
    if closed:
        SshSession.objects.filter(session_id__in=closed).close(f"idle for over {limit:g} s")
        log.info("closed %d idle sessions", len(closed))
    return closed


def start_idle_reaper(stop: threading.Event, interval: float | None = None) -> threading.Thread:
    limit = float(settings.SESSION_IDLE_TIMEOUT)
    period = interval if interval is not None else max(1.0, min(30.0, limit / 4))

    def loop() -> None:
        while not stop.wait(period):
            try:
                close_old_connections()
                close_idle_sessions()
                # Kept output lives where the sessions are, so the same sweep removes what is old.
                outputs.prune(settings.OUTPUT_RETENTION_SECONDS)
            except Exception:  # a failed sweep must not kill the reaper; the next one retries
                log.exception("idle session sweep failed")

    thread = threading.Thread(target=loop, name="sshcontrol-idle-reaper", daemon=True)
    thread.start()
    return thread
