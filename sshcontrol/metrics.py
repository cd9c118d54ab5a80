"""Prometheus metrics: what the call path records, and ``/metrics`` to scrape them.

Counters and histograms are recorded where things happen (a tool call ends, an audit row is
written, a task comes back through the broker); the gauges that describe state every
replica shares (sessions, pending approvals, pending host keys) are read from the database
at scrape time, so they are right whichever replica is scraped. Everything lives in one
registry of its own, with the process and platform collectors.

``/metrics`` is served by ``mcp_serve --transport streamable-http`` next to ``/mcp`` and by
a worker started with ``--metrics-port``. Both accept only the Host headers of
``SSHCONTROL_MCP_ALLOWED_HOSTS`` and, when ``SSHCONTROL_METRICS_TOKEN`` is set, require
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Seconds: a tool call spans a list (milliseconds) to a long command (up to an hour).
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

TOOL_CALLS = Counter(
    "sshcontrol_tool_calls",
    "MCP tool calls by tool and outcome (the audit status: ok, error, denied, timeout, pending, ...).",
    ["tool", "status"],
    registry=REGISTRY,
)
TOOL_DURATION = Histogram(
    "sshcontrol_tool_call_duration_seconds",
    "Wall time of MCP tool calls, from the tool's start to its result.",
    ["tool"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
AUDIT_WRITES = Histogram(
    "sshcontrol_audit_write_seconds",
    "Time to write an audit row: 'begin' opens it, 'complete' finishes it (with the session update).",
    ["phase"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
BROKER_ROUND_TRIP = Histogram(
    "sshcontrol_broker_round_trip_seconds",
    "Distributed mode: from sending a task to a worker to its result, by task (includes the task's run).",
    ["task"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
WORKER_TASKS = Counter(
    "sshcontrol_worker_tasks",
    "Tasks a worker ran, by task and outcome (ok, or the failure kind).",
    ["task", "outcome"],
    registry=REGISTRY,
)
SESSIONS_HELD = Gauge(
    "sshcontrol_sessions_held",
    "SSH sessions held open in this process (a worker, or an embedded mcp_serve).",
    registry=REGISTRY,
)
BATCH_CONNECTIONS = Gauge(
    "sshcontrol_batch_connections",
    "Connections the libssh2 batch engine of ssh_execute_many holds in this process (not sessions).",
    registry=REGISTRY,
)
CALLS_RUNNING = Gauge(
    "sshcontrol_calls_running",
    "SSH calls running in this process right now.",
    registry=REGISTRY,
)


def _held() -> float:
    from sshlib.sessions import registry

    return float(len(registry.all()))


def _running() -> float:
    from sshlib.sessions import registry

    return float(registry.running_count())


def _batch_connections() -> float:
    from sshlib import c_batch

    return float(c_batch.pooled_connections())


SESSIONS_HELD.set_function(_held)
BATCH_CONNECTIONS.set_function(_batch_connections)
CALLS_RUNNING.set_function(_running)


def record_call(tool: str, status: str, seconds: float) -> None:
    TOOL_CALLS.labels(tool, status).inc()
    TOOL_DURATION.labels(tool).observe(seconds)


@contextmanager
def audit_write(phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        AUDIT_WRITES.labels(phase).observe(time.perf_counter() - started)


@contextmanager
def broker_round_trip(task: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        BROKER_ROUND_TRIP.labels(task).observe(time.perf_counter() - started)


class SharedState(Collector):
    """Gauges read from the database at scrape time: the same on every replica."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from django.db.models import Count

        from hosts.access_models import ApprovalRequest
        from hosts.models import HostKey
        from sshcontrol.models import SshSession

        sessions = GaugeMetricFamily(
            "sshcontrol_sessions", "SSH sessions recorded in the database, by state.", labels=["state"]
        )
        by_state = dict(
            SshSession.objects.exclude(state=SshSession.State.CLOSED)
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        for state in (SshSession.State.CONNECTED, SshSession.State.LOST):
            sessions.add_metric([state], by_state.get(state, 0))
        yield sessions
        yield GaugeMetricFamily(
            "sshcontrol_approvals_pending",
            "Approval requests waiting for an administrator's decision.",
            value=ApprovalRequest.objects.filter(state=ApprovalRequest.State.PENDING).count(),
        )
        yield GaugeMetricFamily(
            "sshcontrol_host_keys_pending",
            "Host keys waiting for an administrator's review.",
            value=HostKey.objects.filter(state=HostKey.State.PENDING).count(),
        )


_shared_state = SharedState()
_shared_lock = threading.Lock()
_shared_registered = False


def include_shared_state() -> None:
    """Add the database gauges (the HTTP server does; a worker's metrics stay process-local)."""
    global _shared_registered
    with _shared_lock:
        if not _shared_registered:
            REGISTRY.register(_shared_state)
            _shared_registered = True


# -- access ---------------------------------------------------------------------------------------


def host_allowed(host: str) -> bool:
    """The Host header against SSHCONTROL_MCP_ALLOWED_HOSTS (``name:*`` allows any port)."""
    for allowed in settings.MCP_ALLOWED_HOSTS:
        if allowed.endswith(":*"):
            if host.startswith(allowed[:-1]) and host[len(allowed) - 1 :].isdigit():
                return True
        elif host == allowed:
            return True
    return False


def refusal(host: str, authorization: str) -> tuple[int, str] | None:
    """Why a scrape is refused ((status, reason)), or None when it may read the metrics."""
    if not host_allowed(host):
        return 421, "Host not allowed"
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return 401, "a metrics token is required"
    return None


def exposition() -> bytes:
    return generate_latest(REGISTRY)


# -- --metrics-port for workers (WSGI in a thread) ------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class _ThreadingServer(WSGIServer):
    daemon_threads = True


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found; scrape /metrics\n"]
    refused = refusal(environ.get("HTTP_HOST", ""), environ.get("HTTP_AUTHORIZATION", ""))
    if refused is not None:
        status, reason = refused
        start_response(f"{status} {reason}", [("Content-Type", "text/plain")])
        return [reason.encode() + b"\n"]
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [exposition()]


def serve_in_thread(address: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` on ``address:port`` from a daemon thread; returns the server (to stop it)."""
    from socketserver import ThreadingMixIn

    class Server(ThreadingMixIn, _ThreadingServer):
        pass

    server = make_server(address, port, wsgi_app, server_class=Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="sshcontrol-metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", address, server.server_port)
    return server
