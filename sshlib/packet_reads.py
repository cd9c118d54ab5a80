"""The transport thread's socket reads: what is waiting is read at once, not a packet piece at a time.

paramiko's ``Packetizer.read_all(n)`` asks the socket for exactly the bytes of the piece it
wants next: a packet's first block, then its rest, each a ``poll`` and a ``recv`` under the
socket's timeout. OpenSSH sends a download as 32 KiB channel packets, so a GiB took about
130,000 system calls in the transport thread (strace: 2 ``poll`` and 2 ``recvfrom`` per
packet). Here the socket is read for as much as is waiting (up to ``_BUFFER``) and
``read_all`` hands pieces out of what came: when this process is the slower end (a download that
keeps it busy) one read takes several packets.

The bytes are handed out as paramiko's are (``bytes`` of exactly ``n``), in the same order;
what its loop does on a timeout (a closed transport, a pending rekey, the keepalive) is done
the same way. Bytes left over from the banner are paramiko's to hand out first. A transport
over a jump host's channel (not a socket) keeps paramiko's reads.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import paramiko
from paramiko.packet import NeedRekeyException
from paramiko.packet import Packetizer as _Packetizer

_BUFFER = 256 << 10


class Packetizer(_Packetizer):
    """paramiko's packetizer reading ahead into a buffer of its own (see the module)."""

    _ahead: _Ahead | None = None  # set at the first read (the class is swapped in after __init__)

    def read_all(self, n: int, check_rekey: bool = False) -> Any:
        # paramiko's private state, by its mangled names (read, never written, here).
        sock = self._Packetizer__socket  # type: ignore[attr-defined]
        if self._Packetizer__remainder or not isinstance(sock, socket.socket):  # type: ignore[attr-defined]
            return super().read_all(n, check_rekey)
        ahead = self._ahead
        if ahead is None:
            ahead = self._ahead = _Ahead()
        if ahead.size() >= n:
            return ahead.take(n)
        pieces = []
        want = n
        while want:
            if ahead.size():
                piece = ahead.take(min(want, ahead.size()))
                pieces.append(piece)
                want -= len(piece)
                continue
            if self.handshake_timed_out():
                raise EOFError()
            try:
                ahead.fill(sock)
            except TimeoutError:
                self._timed_out(check_rekey and want == n)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    if self._Packetizer__closed:  # type: ignore[attr-defined]
                        raise EOFError() from None
                    raise
                self._timed_out(check_rekey and want == n)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _timed_out(self, may_rekey: bool) -> None:
        if self._Packetizer__closed:  # type: ignore[attr-defined]
            raise EOFError()
        if may_rekey and self._Packetizer__need_rekey:  # type: ignore[attr-defined]
            raise NeedRekeyException()
        self._check_keepalive()  # type: ignore[attr-defined]


class _Ahead:
    """Bytes read from the socket and not handed out yet: ``data[start:]``.

    Each read is a new ``bytes`` of what arrived (not a buffer kept for the connection's life:
    an idle connection holds nothing here), and a piece that is all of it is handed out as is.
    """

    def __init__(self) -> None:
        self.data = b""
        self.start = 0

    def size(self) -> int:
        return len(self.data) - self.start

    def take(self, n: int) -> bytes:
        if self.start == 0 and n == len(self.data):
            out, self.data = self.data, b""
            return out
        out = self.data[self.start : self.start + n]
        self.start += n
        if self.start == len(self.data):
            self.data, self.start = b"", 0
        return out

    def fill(self, sock: socket.socket) -> None:
        """Read what the socket has, up to ``_BUFFER`` (blocking under its timeout); EOFError when closed."""
        got = sock.recv(_BUFFER)  # called only once everything was handed out
        if not got:
            raise EOFError()
        self.data, self.start = got, 0


def install(transport: paramiko.Transport) -> None:
    """Give ``transport`` this packetizer (before it starts: nothing has been read yet)."""
    transport.packetizer.__class__ = Packetizer
