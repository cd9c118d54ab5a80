"""Held connections that sleep while idle, and still close at once.

paramiko runs one thread per transport that reads its socket with a 0.1 s timeout
(``Transport._active_check_timeout``), only so that it notices ``close()`` and sends keepalives
on time: every idle connection woke ten times a second. 500 idle sessions cost 9.6% of a core
doing nothing and slowed the one working session by 1.5-1.7x (each wake-up takes the GIL);
2,000 cost several times that (``bench/sessions.py``, docs/benchmarks.md "Thousands of sessions").

Once a connection is authenticated, ``quieten`` lengthens that read timeout to
``IDLE_POLL_SECONDS`` (never longer than the keepalive interval, since paramiko sends its
keepalive only when a read times out: an idle connection sends one at each timeout, a busy one
at most two intervals after its last packet). The handshake keeps paramiko's 0.1 s, which its banner
and handshake timeouts rely on. What the short timeout was for is done another way:

- closing: ``QuietTransport.close`` shuts the socket down before paramiko closes it, which
  wakes the thread blocked in ``recv`` at once (a plain ``close()`` of a socket another thread
  waits on does not wake it on Linux). A transport over a jump host's channel needs nothing:
  closing a channel wakes its readers.
- a peer that goes away: its FIN or RST wakes the read as before; a silent one is found by
  TCP keepalive (``sshlib.connect``), whose error wakes the read too.
- rekeying after 2^29 bytes or packets starts at the next packet read or poll, up to
  ``IDLE_POLL_SECONDS`` late; the limits are far below where that matters.

This is the one place sshcontrol changes how paramiko's transport thread runs; everything
else uses paramiko as it is.
"""

from __future__ import annotations

import contextlib
import socket

import paramiko

# How long an idle transport thread sleeps in one read. With the default 30 s keepalive, 2,000
# sessions wake ~67 times a second in all, each wake-up also sending that session's keepalive
# (bench/sessions.py: the keepalives are most of what idle sessions still cost).
IDLE_POLL_SECONDS = 30.0


def idle_poll_seconds(keepalive_seconds: int) -> float:
    if keepalive_seconds > 0:
        return max(0.1, min(IDLE_POLL_SECONDS, float(keepalive_seconds)))
    return IDLE_POLL_SECONDS


def quieten(transport: paramiko.Transport, keepalive_seconds: int = 0) -> None:
    """Turn on the keepalive (when > 0) and let the authenticated transport's thread sleep.

    Set together: the keepalive is sent from the thread's poll, so the poll follows it.
    """
    if keepalive_seconds > 0:
        transport.set_keepalive(keepalive_seconds)
    transport.sock.settimeout(idle_poll_seconds(keepalive_seconds))


class QuietTransport(paramiko.Transport):
    """A transport whose ``close()`` wakes its thread at once, whatever its read timeout."""

    def close(self) -> None:
        sock = self.sock
        if self.is_active() and isinstance(sock, socket.socket):
            # The thread's pending recv() returns b"" and it exits; paramiko then closes the fd.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        super().close()
