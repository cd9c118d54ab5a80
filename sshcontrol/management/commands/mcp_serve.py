"""``mcp_serve``: serve the sshcontrol MCP tools to a client over stdio."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audit import writer
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.idle import start_idle_reaper
from sshcontrol.mcp.server import build_server
from sshcontrol.sessionstate import close_sessions_of_this_process, mark_dead_embedded_sessions
from sshcontrol.ssh.sessions import registry

log = logging.getLogger("sshcontrol.mcp_serve")

SWITCH_INTERVAL_SECONDS = 0.0005


class Command(BaseCommand):
    help = "Serve the sshcontrol MCP tools (stdio transport). Nothing is printed to stdout but the protocol."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--transport", choices=["stdio"], default="stdio")

    def handle(self, *args: Any, **options: Any) -> None:
        interrupted = writer.mark_interrupted()
        lost = mark_dead_embedded_sessions()
        if interrupted or lost:
            log.warning(
                "previous run left %d running audit rows (now interrupted) and %d sessions (now lost)",
                interrupted,
                lost,
            )

        def stop(signum: int, frame: FrameType | None) -> None:
            # SIGTERM from a client shutting us down: close SSH sessions cleanly, then exit.
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        # Each call hops between the event loop, a call thread and paramiko's transport thread.
        # With CPython's default 5 ms GIL switch interval, a thread back from a socket call can
        # wait that long behind the loop's JSON work; 0.5 ms cut ssh_execute's p50 noticeably.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        server = build_server(transport=options["transport"])
        stop_reaper = threading.Event()
        if get_dispatcher().embedded:
            start_idle_reaper(stop_reaper)  # workers run their own reaper in distributed mode
        try:
            server.run("stdio")
        finally:
            stop_reaper.set()
            closed = registry.close_all()
            close_sessions_of_this_process("the server stopped")
            if closed:
                log.info("closed %d SSH sessions on exit", closed)
