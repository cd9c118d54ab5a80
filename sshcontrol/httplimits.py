"""Slow HTTP clients: deadlines for a request's head and body, and a cap on connections per address.

uvicorn closes idle kept-alive connections, but nothing bounds how long a client may take to
send a request: forty connections trickling a header or a body byte by byte stayed open past
30 s, each holding a socket, memory and (for a body) a running request. So every HTTP server
sshcontrol starts (``mcp_serve --transport streamable-http``, ``serve``) runs with:

- ``GuardedProtocol``, wrapped around the HTTP protocol uvicorn would have used. It refuses a
  connection beyond ``SSHCONTROL_HTTP_MAX_CONNECTIONS_PER_IP`` open ones from the same peer
  address (503, closed), and closes a connection whose request head is not complete within
  ``SSHCONTROL_HTTP_HEADER_TIMEOUT`` seconds of the connection opening (or, on a kept-alive
  connection, of the next request's first byte) with a 408.
- ``SlowBodyGuard``, an ASGI middleware: the application is called when a head is complete,
  which stops the head deadline; a request that announces a body must deliver all of it within
  ``SSHCONTROL_HTTP_BODY_TIMEOUT`` seconds of its head, or the connection is aborted (whether
  or not the application reads the body: an unread body kept the connection open too).

The middleware finds its connection through a context variable set while the protocol hands
data to uvicorn: uvicorn starts each request's task there, and a task keeps the context it was
created in. The peer address is the TCP peer: behind a reverse proxy every connection comes
from the proxy, so raise the cap (or set it to 0, no cap) there and let the proxy limit clients.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from django.conf import settings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sshcontrol.http")

_TOO_MANY_BODY = b"too many connections from this address\n"
TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 5\r\n"
    b"connection: close\r\ncontent-length: "
    + str(len(_TOO_MANY_BODY)).encode()
    + b"\r\n\r\n"
    + _TOO_MANY_BODY
)
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
# After a polite close, how long a peer that does not read may keep the socket.
_ABORT_AFTER_CLOSE_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    max_per_address: int  # 0: no cap

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            header_timeout=settings.HTTP_HEADER_TIMEOUT,
            body_timeout=settings.HTTP_BODY_TIMEOUT,
            max_per_address=settings.HTTP_MAX_CONNECTIONS_PER_IP,
        )


class AddressCounter:
    """Open connections per peer address, on the event loop's thread only."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def acquire(self, address: str, limit: int) -> bool:
        count = self.open.get(address, 0)
        if limit and count >= limit:
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)


_connection: contextvars.ContextVar[GuardedProtocol | None] = contextvars.ContextVar(
    "sshcontrol_http_connection", default=None
)


class GuardedProtocol(asyncio.Protocol):
    """One connection: uvicorn's protocol inside, the deadlines and the address cap around it."""

    inner_class: ClassVar[Callable[..., asyncio.Protocol]]
    limits: ClassVar[Limits]
    counter: ClassVar[AddressCounter]

    def __init__(self, **kwargs: Any) -> None:
        self.inner = self.inner_class(**kwargs)
        self.loop = kwargs.get("_loop") or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.admitted = False
        self.awaiting_head = True
        self.requests = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol, forwarded to uvicorn's protocol ------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.counter.acquire(self.address, self.limits.max_per_address):
            log.info(
                "refused a connection from %s: %d already open", self.address, self.limits.max_per_address
            )
            transport.write(TOO_MANY)
            self._close()
            return
        self.admitted = True
        self._arm_head_timer()
        self._forward(self.inner.connection_made, transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.awaiting_head and self.head_timer is None:
            self._arm_head_timer()  # the first byte of the next request on a kept-alive connection
        self._forward(self.inner.data_received, data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        if not self.admitted:
            return None
        return self.inner.eof_received()  # type: ignore[attr-defined, no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if not self.admitted:
            return
        self.admitted = False
        self.counter.release(self.address)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def _forward(self, method: Callable[[Any], None], argument: Any) -> None:
        # A request task uvicorn creates in here inherits this context: SlowBodyGuard finds us.
        token = _connection.set(self)
        try:
            method(argument)
        finally:
            _connection.reset(token)

    # -- deadlines ---------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if not self.awaiting_head or self.transport is None or self.transport.is_closing():
            return
        log.info(
            "closed a connection from %s: no complete request head within %s s",
            self.address,
            self.limits.header_timeout,
        )
        self.transport.write(TIMED_OUT)  # no response is in progress while a head is awaited
        self._close()

    def _body_too_slow(self) -> None:
        self.body_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        log.info(
            "closed a connection from %s: the request body was not complete within %s s",
            self.address,
            self.limits.body_timeout,
        )
        self.transport.abort()  # a response may be under way: nothing more can be said on it

    def _close(self) -> None:
        assert self.transport is not None
        self.transport.close()
        # close() waits to flush; a peer that reads nothing must not hold the socket that way.
        self.loop.call_later(_ABORT_AFTER_CLOSE_SECONDS, self.transport.abort)

    # -- called by SlowBodyGuard -------------------------------------------------------------

    def head_complete(self, expects_body: bool) -> int:
        """A request's head arrived (the application was called); its sequence number."""
        self.awaiting_head = False
        self._cancel_timers()
        if expects_body:
            self.body_timer = self.loop.call_later(self.limits.body_timeout, self._body_too_slow)
        self.requests += 1
        return self.requests

    def body_complete(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def response_complete(self, request: int) -> None:
        # The next head's deadline starts at its first byte (see data_received); uvicorn's own
        # keep-alive timeout closes a connection that sends nothing more. A pipelined request
        # that already started is not reset.
        if request == self.requests:
            self.awaiting_head = True


def _expects_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


class SlowBodyGuard:
    """ASGI middleware: tells the connection's guard when heads, bodies and responses complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard = _connection.get()
        if scope["type"] != "http" or guard is None:
            await self.app(scope, receive, send)
            return
        request = guard.head_complete(_expects_body(scope))

        async def guarded_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                guard.body_complete()
            return message

        async def guarded_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                guard.response_complete(request)

        await self.app(scope, guarded_receive, guarded_send)


def guarded_protocol(limits: Limits | None = None) -> type[GuardedProtocol]:
    """The protocol class to give uvicorn (``http=``): its automatic choice, guarded."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type(
        "SshcontrolHttpProtocol",
        (GuardedProtocol,),
        {
            "inner_class": AutoHTTPProtocol,
            "limits": limits or Limits.from_settings(),
            "counter": AddressCounter(),
        },
    )


def uvicorn_guard(app: ASGIApp) -> tuple[ASGIApp, dict[str, Any]]:
    """``app`` with the body guard, and the options that install the connection guard in uvicorn.

    No WebSocket support (sshcontrol serves none): an upgraded connection would leave the
    guarded protocol, its deadlines and its place in the count behind.
    """
    return SlowBodyGuard(app), {"http": guarded_protocol(), "ws": "none"}
