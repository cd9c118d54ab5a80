"""One thread, one epoll loop, many non-blocking SSH sessions: the scheduler of the C-library rows.

Each host's work is a generator that yields the selector events (``EVENT_READ`` /
``EVENT_WRITE``) its library says it is blocked on, or 0 to be run again at once; the loop
runs at most ``limit`` of them at a time and wakes each only when its socket is ready. The
client scripts beside this file (``libssh2_fanout.py``, ``libssh_fanout.py``) run under the
references' virtual environment, so this module uses the standard library only.

The protocol with ``bench/fanout.py``: one JSON line of spec on stdin, then one run per line
read ("go"), each answered with one JSON line ``[wall seconds, hosts failed, nudges, revived]``
(see ``NUDGE``); the first run connects (cold), later ones reuse the sessions (warm).
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from types import GeneratorType
from typing import Any, Generic, TypeVar

# What a host's step yields: selector events to wait for on its socket, 0 = run again now.
Step = Generator[int, None, None]
H = TypeVar("H")

STALL = float(os.environ.get("FANOUT_STALL", "60"))  # no socket ready this long: the rest fail
# libssh (not libssh2, so far) now and then reads what a host is waiting for into its own
# buffer without reporting it: the socket never becomes readable again and the host waits
# for ever (seen at 200 hosts, about one run in twenty, waiting for a channel's EOF). After
# NUDGE seconds with no socket ready, every waiting host is stepped once; each run reports how
# often that happened and how many hosts then moved on (lost wake-ups). parallel-ssh would not
# notice one: it waits on each socket with a 1 ms timeout.
NUDGE = float(os.environ.get("FANOUT_NUDGE", "0.02"))


class Loop(Generic[H]):
    """Runs ``work(host)`` for every host, at most ``limit`` at once, on one epoll selector.

    ``fd`` gives a host's socket once its work has started (a step that yielded has one).
    """

    def __init__(self, work: Callable[[H], Step], fd: Callable[[H], int], limit: int) -> None:
        self.work, self.fd, self.limit = work, fd, limit
        self.selector = selectors.EpollSelector()
        self.waiting: deque[H] = deque()
        self.ready: deque[tuple[H, Step]] = deque()
        self.registered: set[int] = set()
        self.active = self.failed = 0
        # Idle periods that stepped every waiting host, and hosts that moved on when stepped so.
        self.nudges = self.revived = 0
        self.nudged: dict[int, str] = {}  # id(step) -> where it waited when nudged

    def run(self, hosts: Sequence[H]) -> int:
        """The number of hosts whose work raised (or had not finished after STALL seconds idle)."""
        self.waiting.extend(hosts)
        self._start()
        idle = 0.0
        try:
            while self.active:
                self._step_ready()
                if not self.active:
                    break
                woken = self.selector.select(NUDGE)
                if woken:
                    idle = 0.0
                    self.ready.extend(key.data for key, _mask in woken)
                    continue
                idle += NUDGE
                waiting = [key.data for key in self.selector.get_map().values()]
                if idle >= STALL:
                    stuck = [where(step) for _host, step in waiting]
                    print(f"stalled: {self.active} hosts unfinished, waiting at {stuck}", file=sys.stderr)
                    return self.failed + self.active + len(self.waiting)
                # Nothing ready for NUDGE seconds: step every waiting host once (see NUDGE).
                self.nudges += 1
                self.nudged = {id(step): where(step) for _host, step in waiting}
                self.ready.extend(waiting)
            return self.failed
        finally:
            self.selector.close()

    def _start(self) -> None:
        while self.waiting and self.active < self.limit:
            host = self.waiting.popleft()
            self.ready.append((host, self.work(host)))
            self.active += 1

    def _step_ready(self) -> None:
        while self.ready:
            host, step = self.ready.popleft()
            before = self.nudged.pop(id(step), None)
            try:
                events = next(step)
            except StopIteration:
                self.revived += before is not None
                self._finish(host)
                continue
            except Exception as error:  # a failed host is counted; the others go on
                print(f"host failed: {type(error).__name__}: {error}", file=sys.stderr)
                self.failed += 1
                self._finish(host)
                continue
            if before is not None and where(step) != before:
                self.revived += 1
            if not events:
                self.ready.append((host, step))
                continue
            number = self.fd(host)
            if number in self.registered:
                self.selector.modify(number, events, (host, step))
            else:
                self.selector.register(number, events, (host, step))
                self.registered.add(number)

    def _finish(self, host: H) -> None:
        self.active -= 1
        try:
            number = self.fd(host)
        except (AssertionError, OSError):  # failed before it had a socket
            number = -1
        if number in self.registered:
            self.selector.unregister(number)
            self.registered.discard(number)
        self._start()


def serve(
    connect: Callable[[Any], Step],
    execute: Callable[[Any], Step],
    make: Callable[[dict[str, Any], dict[str, Any]], Any],
    fd: Callable[[Any], int],
) -> None:
    """The bench protocol: the spec, then one run per line read; cold (connect + execute), then warm."""
    spec = json.loads(sys.stdin.readline())
    hosts = [make(spec, h) for h in spec["hosts"]]
    limit = int(spec["parallel"])
    cold = True
    for _line in sys.stdin:
        started = time.perf_counter()
        loop = (
            Loop(lambda host: _chain(connect(host), execute(host)), fd, limit)
            if cold
            else Loop(execute, fd, limit)
        )
        failed = loop.run(hosts)
        cold = False
        print(json.dumps([time.perf_counter() - started, failed, loop.nudges, loop.revived]), flush=True)


def where(step: Step) -> str:
    """The innermost generator a step is suspended in, and its line (for a stall's report)."""
    current: object = step
    while isinstance(current, GeneratorType) and isinstance(current.gi_yieldfrom, GeneratorType):
        current = current.gi_yieldfrom
    if not isinstance(current, GeneratorType):
        return repr(current)
    frame = current.gi_frame
    return f"{current.__name__}:{frame.f_lineno}" if frame is not None else current.__name__


def _chain(first: Step, second: Step) -> Step:
    yield from first
    yield from second


def nonblocking_socket(port: int) -> tuple[socket.socket, bool]:
    """A TCP_NODELAY socket connecting to 127.0.0.1:port; True if the connect is still in progress."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    code = sock.connect_ex(("127.0.0.1", port))
    if code not in (0, 115):  # 115: EINPROGRESS
        sock.close()
        raise OSError(code, "connect failed")
    return sock, code != 0


def connected(sock: socket.socket) -> None:
    """Raise if a non-blocking connect that finished (writable) failed."""
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, "connect failed")


class HostKeyMismatch(Exception):
    pass


@dataclass
class Host:
    """One host of the spec, and its connection once made (the same for both libraries)."""

    port: int
    user: str
    key: bytes
    host_key: bytes
    command: str
    expect: bytes | None
    sock: socket.socket | None = None
    session: Any = None


def make(spec: dict[str, Any], h: dict[str, Any]) -> Host:
    expect = spec.get("expect")
    return Host(
        port=h["port"],
        user=h["user"],
        key=h["key"].encode(),
        host_key=base64.b64decode(h["host_key"]),
        command=spec["command"],
        expect=expect.encode() if expect else None,
    )


def fd(host: Host) -> int:
    assert host.sock is not None
    return host.sock.fileno()
