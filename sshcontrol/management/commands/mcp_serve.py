"""``mcp_serve``: serve the sshcontrol MCP tools over stdio or streamable HTTP.

Over stdio the caller is fixed for the life of the process (``SSHCONTROL_CLIENT_TOKEN`` or
the OS user's local client) and nothing but the protocol is printed to stdout. Over
streamable HTTP every request carries its client's bearer token, and the admin is served
on the same port unless ``--no-admin`` is given.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import anyio
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import writer
from hosts.clients import ClientAuthError
from sshcontrol import durable, orphans
from sshcontrol.dbretry import DatabaseUnavailable, flush_pending, pending_writes, retrying
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.holders import close_sessions_of_this_process, mark_dead_embedded_sessions
from sshcontrol.httplimits import uvicorn_guard
from sshcontrol.idle import start_idle_reaper
from sshcontrol.malloc_tuning import keep_freed_buffers
from sshcontrol.management.commands.serve import ensure_admin_user, parse_bind
from sshcontrol.mcp import stdio
from sshcontrol.mcp.identity import process_client
from sshcontrol.mcp.server import build_server
from sshlib.sessions import registry

log = logging.getLogger("sshcontrol.mcp_serve")

SWITCH_INTERVAL_SECONDS = 0.0005
DEFAULT_BIND = "127.0.0.1:8000"
# Open SSE streams would otherwise hold a stopping HTTP server up until clients hang up.
GRACEFUL_SHUTDOWN_SECONDS = 5
# How long a stopping server waits for audit completions postponed while the database was away.
PENDING_WRITES_SECONDS = 10.0


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = (
        "Serve the sshcontrol MCP tools: over stdio (the default; nothing is printed to stdout but "
        "the protocol) or over streamable HTTP with bearer tokens, with the admin on the same port."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
        parser.add_argument(
            "--bind", help=f"streamable-http: address:port to listen on (default {DEFAULT_BIND})"
        )
        parser.add_argument(
            "--no-admin", action="store_true", help="streamable-http: serve MCP only, without the admin"
        )
        parser.add_argument(
            "--no-create-admin", action="store_true", help="do not create a first administrator"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        transport: str = options["transport"]
        if transport == "stdio" and (options["bind"] or options["no_admin"]):
            raise CommandError("--bind and --no-admin only apply to --transport streamable-http")
        keep_freed_buffers()  # a page of output, a window of a transfer: reused, not refaulted
        # Resolve everything that can fail before touching state left by a previous run.
        run = self.stdio_runner() if transport == "stdio" else self.http_runner(options)

        def stop(signum: int, frame: FrameType | None) -> None:
            # SIGTERM (a client or service manager stopping us): leave through the finally
            # below, which closes the SSH sessions. uvicorn captures SIGTERM while it serves
            # and, once it has shut down gracefully, raises it again into this handler.
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        if transport != "stdio":
            signal.signal(signal.SIGINT, stop)  # Ctrl-C in a terminal: the same clean stop, no traceback

        # First the completions a killed process spooled while the database was away: those
        # rows get their true outcome, not "interrupted".
        replayed = durable.replay_spooled()  # retried inside, per row
        if replayed:
            log.warning("wrote %d audit completions a stopped process had spooled", replayed)
        interrupted = retrying(writer.mark_interrupted, "marking rows of stopped processes interrupted")
        lost = retrying(mark_dead_embedded_sessions, "marking sessions of stopped processes lost")
        if interrupted or lost:
            log.warning(
                "previous run left %d running audit rows (now interrupted) and %d sessions (now lost)",
                interrupted,
                lost,
            )
        # Each call hops between the event loop, a call thread and paramiko's transport thread.
        # With CPython's default 5 ms GIL switch interval, a thread back from a socket call can
        # wait that long behind the loop's JSON work; 0.5 ms cut ssh_execute's p50 noticeably.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        stop_reaper = threading.Event()
        if get_dispatcher().embedded:
            # Workers run their own reaper and orphan sweeper in distributed mode.
            start_idle_reaper(stop_reaper)
            # After the relabelling above, so an orphan_kill row names an already-finished row.
            orphans.start_embedded_sweeper(stop_reaper)
        try:
            run()
        finally:
            stop_reaper.set()
            if not flush_pending(PENDING_WRITES_SECONDS):
                log.error(
                    "%d audit completions could not be written: the database is still away", pending_writes()
                )
            closed = registry.close_all()
            try:
                # The main thread's connection may have been killed while the server ran.
                retrying(
                    lambda: close_sessions_of_this_process("the server stopped"),
                    "closing this server's sessions",
                )
            except DatabaseUnavailable as exc:
                log.error("%s; the next start marks them lost", exc)
            if closed:
                log.info("closed %d SSH sessions on exit", closed)

    def stdio_runner(self) -> Callable[[], None]:
        try:
            client = process_client()
        except ClientAuthError as exc:
            raise CommandError(f"SSHCONTROL_CLIENT_TOKEN: {exc}") from exc
        except DatabaseUnavailable as exc:
            raise CommandError(str(exc)) from exc
        server = build_server(transport="stdio", client=client)
        return lambda: anyio.run(stdio.serve, server)

    def http_runner(self, options: dict[str, Any]) -> Callable[[], None]:
        import uvicorn

        from sshcontrol.mcp.http import MCP_PATH, build_app

        host, port = parse_bind(options["bind"] or DEFAULT_BIND)
        url = base_url(host, port)
        admin = not options["no_admin"]
        if admin and not options["no_create_admin"]:
            ensure_admin_user(self.stderr)
        app, limits = uvicorn_guard(build_app(url, admin=admin))
        shown = url if host not in ("0.0.0.0", "::") else base_url("127.0.0.1", port)  # noqa: S104
        self.stderr.write(f"sshcontrol MCP endpoint on {shown}{MCP_PATH} (clients send a bearer token)")
        if admin:
            self.stderr.write(f"sshcontrol admin on {shown}/admin/")
        if not is_loopback(host):
            self.stderr.write(
                "Listening beyond loopback: put a TLS reverse proxy in front (tokens travel in a header) "
                "and list its public name in SSHCONTROL_MCP_ALLOWED_HOSTS (see docs/http.md)."
            )
        return lambda: uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            server_header=False,
            forwarded_allow_ips=settings.TRUSTED_PROXIES,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            **limits,
        )
