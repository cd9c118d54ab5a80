"""The transport's socket reads (sshlib/packet_reads.py): what is waiting is taken in one read."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from sshlib.packet_reads import Packetizer
from tests.polling import wait_until


class CountingSocket(socket.socket):
    """A socket that counts its reads."""

    reads = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.reads += 1
        return super().recv(size, flags)


Pair = tuple[CountingSocket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    ours, theirs = socket.socketpair()
    counted = CountingSocket(fileno=ours.detach())
    counted.settimeout(5)
    with counted, theirs:
        yield counted, theirs


def test_pieces_of_several_packets_waiting_are_read_at_once(pair: Pair) -> None:
    ours, theirs = pair
    pieces = [os.urandom(n) for n in (16, 32752, 16, 2000, 16, 65536)]
    theirs.sendall(b"".join(pieces))
    packets = Packetizer(ours)
    wait_for = sum(map(len, pieces))
    # Everything is in the socket before the first read.
    wait_until(lambda: len(ours.recv(wait_for, socket.MSG_PEEK)) >= wait_for, 10, "the pieces arrived")
    ours.reads = 0
    assert [packets.read_all(len(p)) for p in pieces] == pieces
    assert ours.reads == 1


def test_a_connection_whose_bytes_were_all_handed_out_keeps_no_read_ahead(pair: Pair) -> None:
    # The module's promise for thousands of idle sessions: nothing read ahead is kept once taken.
    ours, theirs = pair
    pieces = [os.urandom(n) for n in (16, 32752, 16, 2000)]
    theirs.sendall(b"".join(pieces))
    packets = Packetizer(ours)
    wait_for = sum(map(len, pieces))
    wait_until(lambda: len(ours.recv(wait_for, socket.MSG_PEEK)) >= wait_for, 10, "the pieces arrived")
    assert [packets.read_all(len(p)) for p in pieces] == pieces
    ahead = packets._ahead
    assert ahead is not None and ahead.size() == 0 and len(ahead.data) == 0


def test_a_piece_that_arrives_in_parts_is_handed_out_whole(pair: Pair) -> None:
    ours, theirs = pair
    data = os.urandom(100_000)
    theirs.sendall(data[:10] + data[10:20])
    packets = Packetizer(ours)
    assert packets.read_all(10) == data[:10]
    writer = threading.Thread(target=lambda: theirs.sendall(data[20:]))
    writer.start()
    assert packets.read_all(len(data) - 10) == data[10:]  # 10 bytes read ahead, the rest later
    writer.join()


def test_a_closed_peer_ends_the_read(pair: Pair) -> None:
    ours, theirs = pair
    theirs.sendall(b"12345")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError):
        Packetizer(ours).read_all(10)


def test_a_closed_packetizer_ends_the_read(pair: Pair) -> None:
    ours, _theirs = pair
    ours.settimeout(0.05)
    packets = Packetizer(ours)
    packets.close()  # what Transport.close does; the thread blocked in read_all must end
    with pytest.raises(EOFError):
        packets.read_all(16)


def test_a_jump_host_channel_keeps_paramiko_s_reads() -> None:
    class Channel:  # what a transport over a jump host reads from: not a socket
        def __init__(self, data: bytes) -> None:
            self.data = data

        def recv(self, size: int) -> bytes:
            out, self.data = self.data[:size], self.data[size:]
            return out

        def settimeout(self, timeout: float) -> None:
            pass

    packets = Packetizer(Channel(b"abcdef"))  # type: ignore[arg-type]
    assert packets.read_all(4) == b"abcd" and packets.read_all(2) == b"ef"
    assert packets._ahead is None
