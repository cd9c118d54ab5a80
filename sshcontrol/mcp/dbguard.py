"""A bearer token that could not be checked because the database was away: 503, never 401.

The SDK's bearer middleware knows only "valid" (an access token) and "not" (None, which it
answers 401), and an exception from the verifier becomes a bare 500. A client told 401
throws its token away or starts an OAuth flow for nothing. So a verifier whose lookup
failed for the whole retry bound (``sshcontrol.dbretry``) notes it here and returns None,
and ``UnavailableAs503`` around the MCP app answers that request 503 with a JSON error and
``Retry-After`` instead of the SDK's 401.
"""

from __future__ import annotations

import json
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sshcontrol.dbretry import DatabaseUnavailable

RETRY_AFTER_SECONDS = 5

# The request's notes; a list (not a value) so a note made in a copied context still reaches it.
_noted: ContextVar[list[str] | None] = ContextVar("sshcontrol_token_check_unavailable", default=None)


def note(exc: DatabaseUnavailable) -> None:
    """Called by a verifier that gives up on the database: this request gets 503."""
    box = _noted.get()
    if box is not None:
        box.append(str(exc))


def unavailable_body(message: str) -> bytes:
    return json.dumps({"error": "database_unavailable", "error_description": message}).encode()


class UnavailableAs503:
    """ASGI wrapper: a request whose token check met no database is answered 503 (JSON)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        box: list[str] = []
        token = _noted.set(box)
        replaced = False

        async def relay(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the SDK's own answer (a 401) is dropped
            if message["type"] == "http.response.start" and box:
                replaced = True
                body = unavailable_body(box[0])
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, relay)
        finally:
            _noted.reset(token)
