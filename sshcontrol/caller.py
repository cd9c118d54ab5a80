"""Who makes a call that touches a host: recorded on its audit row, bound by its client's grants."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN_TRANSPORT = "admin"


@dataclass(frozen=True)
class Caller:
    actor: str  # e.g. "ci-bot (claude-code)"
    transport: str  # "stdio", "streamable-http", "memory", "admin"
    # The MCP client; None only for actions of a signed-in admin (Test connection), which
    # no client policy binds. Nothing reachable over MCP builds a Caller without a client.
    client_id: int | None = None
    client_name: str | None = None
    # Set when an identity provider's access token authenticated the request (mcp/oauth.py).
    oauth_issuer: str | None = None
    oauth_subject: str | None = None

    @classmethod
    def admin(cls, username: str) -> Caller:
        """A signed-in admin acting from the browser (Test connection, Terminate)."""
        return cls(actor=f"admin:{username}", transport=ADMIN_TRANSPORT)
