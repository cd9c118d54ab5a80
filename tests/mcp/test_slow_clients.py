"""Slow HTTP clients against a real ``mcp_serve --transport streamable-http`` on loopback.

Forty connections trickle a request head or a body one byte at a time: each must be closed
within its limit plus a margin while a normal client is still served, and connections beyond
the cap from one address must be refused while another address is served.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mcp.test_http import INITIALIZE, issue
from tests.polling import wait_until
from tests.server_process import launch, server_env
from tests.sshd import free_port

HEAD_LIMIT = 2.0
BODY_LIMIT = 2.0
MARGIN = 4.0  # scheduling on a busy two-core machine, and the poll interval
TRICKLE_SECONDS = 0.25


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


def start(
    tmp: Path, command: tuple[str, ...] = ("mcp_serve", "--transport", "streamable-http"), **settings: str
) -> Server:
    port = free_port()
    log = tmp / "server.log"
    proc = launch(
        [
            *(sys.executable, "-m", "sshcontrol", *command),
            *("--bind", f"127.0.0.1:{port}", "--no-create-admin"),
        ],
        server_env(tmp, **settings),
        log,
    )
    server = Server(proc, port, log)

    def answering() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return get_status(server, "/admin/login/") == 200
        except OSError:
            return False

    try:
        wait_until(answering, 60, f"{command[0]} did not answer")
    except AssertionError:
        proc.kill()
        raise
    return server


def stop(server: Server, exit_code: int = 0) -> None:
    """SIGTERM; mcp_serve exits 0, ``serve`` (uvicorn's default handling) by the signal."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        raise
    text = server.log.read_text()
    # The SDK logs a client that vanished in the middle of a body (as a cut one did) with its
    # traceback; nothing else may fail.
    assert code == exit_code and text.count("Traceback") == text.count(
        "starlette.requests.ClientDisconnect"
    ), text


def get_status(server: Server, path: str, source: str = "127.0.0.1") -> int:
    """A complete, ordinary request from ``source``; the response's status code."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode()
        )
        status = sock.makefile("rb").readline()
    return int(status.split()[1])


@pytest.fixture
def slow_server(tmp_path: Path, django_db_setup: None) -> Iterator[Server]:
    server = start(
        tmp_path,
        SSHCONTROL_HTTP_HEADER_TIMEOUT=str(HEAD_LIMIT),
        SSHCONTROL_HTTP_BODY_TIMEOUT=str(BODY_LIMIT),
        SSHCONTROL_HTTP_MAX_CONNECTIONS_PER_IP="100",
    )
    yield server
    stop(server)


@dataclass
class Outcome:
    kind: str
    closed_after: float | None  # seconds from the start of the slow part; None: still open
    received: bytes


async def trickle(port: int, kind: str, token: str = "") -> Outcome:
    """Send a head (``head``) or a body (``body``) one byte at a time until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    if kind == "next-head":
        # One whole request and its response first: the slow head is the connection's second.
        writer.write(b"GET /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
    if kind in ("head", "next-head"):
        writer.write(b"GET /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    else:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\nContent-Length: 100000\r\n\r\n"
            ).encode()
        )
    await writer.drain()
    started = time.monotonic()
    trickled = json.dumps(INITIALIZE).encode() if kind == "body" else b"a"
    give_up = started + (BODY_LIMIT if kind == "body" else HEAD_LIMIT) + MARGIN + 5
    i = 0
    try:
        while time.monotonic() < give_up:
            writer.write(trickled[i % len(trickled) : i % len(trickled) + 1])
            i += 1
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), TRICKLE_SECONDS)
            except TimeoutError:
                continue
            if not chunk:
                return Outcome(kind, time.monotonic() - started, received)
            received += chunk
    except ConnectionError:
        return Outcome(kind, time.monotonic() - started, received)
    finally:
        writer.close()
    return Outcome(kind, None, received)


@pytest.mark.django_db(transaction=True)
def test_it_closes_connections_that_trickle_a_head_or_a_body_while_serving_others(
    slow_server: Server,
) -> None:
    token = issue("slow-body").token

    async def scenario() -> tuple[list[Outcome], list[float]]:
        slow = [asyncio.create_task(trickle(slow_server.port, "head")) for _ in range(15)]
        # On a kept-alive connection the deadline starts with the next request's first byte.
        slow += [asyncio.create_task(trickle(slow_server.port, "next-head")) for _ in range(5)]
        slow += [asyncio.create_task(trickle(slow_server.port, "body")) for _ in range(10)]
        # With a valid token the MCP endpoint waits for the body; without one it answers 401 first.
        slow += [asyncio.create_task(trickle(slow_server.port, "body", token)) for _ in range(10)]
        served: list[float] = []
        while not all(task.done() for task in slow) and len(served) < 5:
            began = time.monotonic()
            assert await asyncio.to_thread(get_status, slow_server, "/admin/login/") == 200
            served.append(time.monotonic() - began)
            await asyncio.sleep(0.2)
        return list(await asyncio.gather(*slow)), served

    outcomes, served = asyncio.run(scenario())
    assert served and max(served) < 5, f"a normal client waited {served}"
    for outcome in outcomes:
        limit = BODY_LIMIT if outcome.kind == "body" else HEAD_LIMIT
        assert outcome.closed_after is not None, (
            f"a slow {outcome.kind} was still open after {limit + MARGIN + 5} s"
        )
        # Not closed early for some other reason (the server's clock may start a little before ours).
        assert limit / 2 <= outcome.closed_after <= limit + MARGIN, (outcome.kind, outcome.closed_after)
        if outcome.kind != "body":
            assert outcome.received.startswith(b"HTTP/1.1 408"), outcome.received[:100]


def test_it_caps_open_connections_per_address(tmp_path: Path, django_db_setup: None) -> None:
    server = start(
        tmp_path,
        SSHCONTROL_HTTP_HEADER_TIMEOUT="60",
        SSHCONTROL_HTTP_MAX_CONNECTIONS_PER_IP="10",
    )
    held: list[socket.socket] = []
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\n")  # a head never finished
            held.append(sock)
        refused = []
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
                refused.append(extra.makefile("rb").read())
        assert all(r.startswith(b"HTTP/1.1 503") for r in refused), refused
        # Another address is not held to this one's count.
        assert get_status(server, "/admin/login/", source="127.0.0.2") == 200
        # A freed place is given to the next connection.
        held.pop().close()

        def served() -> bool:
            try:
                return get_status(server, "/admin/login/") == 200
            except (OSError, ValueError, IndexError):
                return False

        wait_until(served, 10, "the freed place was not given back")
    finally:
        for sock in held:
            sock.close()
        stop(server)


def test_it_closes_a_slow_head_on_the_admin_server_too(tmp_path: Path, django_db_setup: None) -> None:
    server = start(tmp_path, ("serve",), SSHCONTROL_HTTP_HEADER_TIMEOUT=str(HEAD_LIMIT))
    try:
        outcome = asyncio.run(trickle(server.port, "head"))
        assert outcome.closed_after is not None and outcome.closed_after <= HEAD_LIMIT + MARGIN
        assert outcome.received.startswith(b"HTTP/1.1 408")
    finally:
        stop(server, -signal.SIGTERM)
