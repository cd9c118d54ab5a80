"""Who is calling: the identity recorded on every audit row."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Caller:
    actor: str  # e.g. "claude-code (os:alice)"
    transport: str  # "stdio", "memory", ...


@lru_cache(maxsize=1)
def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def client_name(ctx: Any) -> str:
    """The name the MCP client announced, when the protocol revision carries one."""
    try:
        params = ctx.request_context.session.client_params
        info = getattr(params, "client_info", None)
        name = getattr(info, "name", None)
    except Exception:
        name = None
    return str(name)[:80] if name else "mcp-client"


def caller_for(ctx: Any, transport: str) -> Caller:
    return Caller(actor=f"{client_name(ctx)} (os:{os_user()})", transport=transport)
