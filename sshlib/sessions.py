"""The sessions this process holds: live connections by session id, and the calls running on them.

A session is one SSH connection (its jump connections shared with the other sessions
through the same hosts); each command gets its own channel on it, so calls on
one session run in parallel. A dropped connection is re-opened on the next call (the
caller supplies a fresh ``ConnectSpec``, so a host key revoked in the meantime applies).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paramiko

from sshlib.connect import Connection, ConnectSpec, open_connection
from sshlib.jumps import JumpPool


@dataclass
class Session:
    """One held connection. ``lock`` serialises reconnects, never the commands themselves."""

    session_id: str
    host_ref: str  # whatever identifies the host to the caller (the host's primary key, as text)
    connection: Connection
    opened_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    commands_run: int = 0
    secrets: tuple[str, ...] = field(default=(), repr=False)  # what to redact from this session's output
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    jumps: JumpPool | None = field(default=None, repr=False)  # the jump connections it shares
    host_name: str = ""  # the host's name when it was opened (ConnectSpec.name)

    def client(self, respec: Callable[[], ConnectSpec]) -> tuple[paramiko.SSHClient, bool]:
        """An active client, reconnecting first if the connection dropped. Returns (client, reconnected)."""
        if self.connection.is_active():
            return self.connection.client, False
        with self.lock:
            if self.connection.is_active():  # another thread reconnected meanwhile
                return self.connection.client, False
            dropped = self.connection
            try:
                spec = respec()
                self.connection = open_connection(spec, self.jumps)
            finally:
                # Let go of the dropped connection only now: a jump connection it shares and
                # that is still up is then reused, not closed (as its last user) and re-opened.
                dropped.close()
            self.secrets = spec.secrets
            return self.connection.client, True

    def touch(self, command: bool = False) -> None:
        self.last_used_at = time.time()
        if command:
            self.commands_run += 1

    def probe(self, timeout: float = 3.0) -> bool:
        """Real liveness: the server must answer a channel-open within ``timeout``."""
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            return False
        try:
            channel = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError):
            return False
        channel.close()
        return True


CLIENT_CANCEL = "cancelled by the client"


class CancelEvent(threading.Event):
    """A running call's cancel flag, with who cancelled it (the client, or a stopping process)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


class SessionRegistry:
    """Sessions and running calls of this process. Thread-safe.

    Its sessions share their jump connections (``sshlib.jumps``): sessions through the same
    chain of jump hosts are channels of one connection to each hop, not one login each.
    """

    def __init__(self) -> None:
        self.jumps = JumpPool()
        self._sessions: dict[str, Session] = {}
        self._calls: dict[str, CancelEvent] = {}
        self._lock = threading.Lock()

    def open(self, session_id: str, host_ref: str, spec: ConnectSpec) -> Session:
        connection = open_connection(spec, self.jumps)
        session = Session(
            session_id=session_id,
            host_ref=host_ref,
            connection=connection,
            secrets=spec.secrets,
            jumps=self.jumps,
            host_name=spec.name,
        )
        with self._lock:
            previous = self._sessions.pop(session_id, None)
            self._sessions[session_id] = session
        if previous is not None:
            previous.connection.close()
        return session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def all(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def close(self, session_id: str) -> bool:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        session.connection.close()
        return True

    def close_all(self) -> int:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.connection.close()
        return len(sessions)

    @contextmanager
    def running_call(self, call_id: str) -> Iterator[CancelEvent]:
        """Register a call so ``cancel(call_id)`` can stop it from another thread."""
        event = CancelEvent()
        with self._lock:
            self._calls[call_id] = event
        try:
            yield event
        finally:
            with self._lock:
                self._calls.pop(call_id, None)

    def running_count(self) -> int:
        with self._lock:
            return len(self._calls)

    def wait_for_calls(self, seconds: float) -> bool:
        """Wait until no call runs (or ``seconds`` pass); True when none is left."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.running_count():
                return True
            time.sleep(0.05)
        return not self.running_count()

    def cancel_all(self, reason: str) -> int:
        with self._lock:
            events = list(self._calls.values())
        for event in events:
            event.cancel(reason)
        return len(events)

    def cancel(self, call_id: str, reason: str = CLIENT_CANCEL) -> bool:
        with self._lock:
            event = self._calls.get(call_id)
        if event is None:
            return False
        event.cancel(reason)
        return True


registry = SessionRegistry()
