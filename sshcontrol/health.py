"""``/healthz`` and ``/readyz`` on the HTTP server, for load balancers and orchestrators.

``/healthz`` says the process answers (no I/O: a hung database must not get a live process
restarted). ``/readyz`` says it can serve calls: the database answers, every migration is
applied, and, in distributed mode, the broker accepts a connection. It answers 200 or 503
with one word per check; reasons name the failing part, never a URL or a credential.
Neither needs a token: they reveal nothing a scrape of the port would not.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from sshcontrol import metrics

log = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2.0

_migrated = False  # once every migration was seen applied, a process need not look again


def database_ready() -> str:
    """ "ok", or why the database cannot serve calls."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        return "unreachable"
    return "ok"


def migrations_ready() -> str:
    global _migrated
    if _migrated:
        return "ok"
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if unapplied:
        return f"{len(unapplied)} unapplied (run sshcontrol migrate)"
    _migrated = True
    return "ok"


def broker_ready() -> str:
    if not settings.BROKER_URL:
        return "not configured"
    from sshcontrol.celery import app

    try:
        with app.connection_for_write(settings.BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", type(exc).__name__)
        return "unreachable"
    return "ok"


def readiness() -> dict[str, Any]:
    checks = {"database": database_ready()}
    checks["migrations"] = migrations_ready() if checks["database"] == "ok" else "unknown"
    checks["broker"] = broker_ready()
    ready = all(value in ("ok", "not configured") for value in checks.values())
    return {"ready": ready, "checks": checks}


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    from sshcontrol.mcp.threads import in_thread

    report = await in_thread(readiness)  # the sync ORM and a blocking broker connect
    return JSONResponse(report, status_code=200 if report["ready"] else 503)


async def scrape(request: Request) -> Response:
    """``/metrics`` on the HTTP server, behind the metrics token (``sshcontrol/metrics.py``)."""
    from sshcontrol.mcp.threads import in_thread

    refused = metrics.refusal(request.headers.get("host", ""), request.headers.get("authorization", ""))
    if refused is not None:
        status, reason = refused
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return PlainTextResponse(reason, status_code=status, headers=headers)
    body = await in_thread(metrics.exposition)  # the database gauges use the sync ORM
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[BaseRoute]:
    metrics.include_shared_state()
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]
