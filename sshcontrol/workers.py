"""Which process holds a session: its stable name, and whether it still runs."""

from __future__ import annotations

from audit.process import current_process_key, is_alive

EMBEDDED_PREFIX = "embedded:"


def current_worker() -> str:
    """On the embedded default the MCP server process itself holds the sessions."""
    return EMBEDDED_PREFIX + current_process_key()


def worker_alive(worker: str) -> bool | None:
    """True / False for an embedded process on this machine; None when it cannot be told from here."""
    if worker.startswith(EMBEDDED_PREFIX):
        return is_alive(worker[len(EMBEDDED_PREFIX) :])
    return None
