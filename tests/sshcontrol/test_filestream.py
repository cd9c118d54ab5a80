"""The transfer stream's ends against a real Redis: the window, the end check, aborts and stalls."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from typing import cast

import pytest
import redis
import xxhash
from django.test import override_settings

from sshcontrol import filestream
from tests.distributed.conftest import BROKERS, reachable

URL = BROKERS["redis"]


@pytest.fixture
def stream() -> Iterator[str]:
    if not reachable(URL):
        pytest.skip("redis is not running")
    stream_id = filestream.new_stream_id()
    with override_settings(BROKER_URL=URL, TRANSFER_STALL_SECONDS=1.0, TRANSFER_WINDOW_CHUNKS=3):
        yield stream_id
        filestream.delete(stream_id)


def test_it_moves_bytes_intact_between_the_ends(stream: str) -> None:
    data = os.urandom(7 * filestream.CHUNK + 12345)
    got = bytearray()
    with override_settings(TRANSFER_STALL_SECONDS=30.0):  # a loaded machine may pause either thread
        receiver = filestream.Receiver(stream)
        sender = filestream.Sender(stream)

    def send() -> None:
        for start in range(0, len(data), 300_000):
            sender.write(data[start : start + 300_000])
        sender.finish()
        sender.close()

    thread = threading.Thread(target=send)
    thread.start()
    while chunk := receiver.read(filestream.CHUNK):
        got += chunk
    thread.join()
    receiver.close()
    # The receiver checked the bytes (XXH3-128) and reports the sender's SHA-256 of them.
    assert bytes(got) == data and receiver.sha256 == hashlib.sha256(data).hexdigest()


def _end(data: bytes, **changes: object) -> bytes:
    fields = {
        "size": len(data),
        "xxh3_128": xxhash.xxh3_128_hexdigest(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return b"e" + json.dumps(fields | changes).encode()


def test_a_sender_never_runs_more_than_the_window_ahead(stream: str) -> None:
    sender = filestream.Sender(stream)
    with pytest.raises(filestream.StreamBroken, match="nothing from the other end for 1 s"):
        sender.write(os.urandom(10 * filestream.CHUNK))
    data_queue = filestream.queue_names(stream)[0]
    assert redis.Redis.from_url(URL).llen(data_queue) == 3  # the window, no more
    sender.close()


@pytest.mark.parametrize(
    "end",
    [
        _end(b"abd"),  # one byte changed in flight: same size, another XXH3
        _end(b"abcd"),  # a frame's tail lost
        _end(b"abc", xxh3_128="0" * 32),
        _end(b"abc", sha256="not a digest"),  # nothing the audit row could record
        _end(b"abc", sha256=None),
    ],
)
def test_a_receiver_refuses_bytes_that_do_not_match_the_end_frame(stream: str, end: bytes) -> None:
    data_queue = filestream.queue_names(stream)[0]
    client = redis.Redis.from_url(URL)
    client.rpush(data_queue, b"dabc")
    client.rpush(data_queue, end)
    receiver = filestream.Receiver(stream)
    assert receiver.read() == b"abc"
    with pytest.raises(filestream.StreamBroken, match=r"corrupted|carried no SHA-256"):
        receiver.read()
    with pytest.raises(filestream.StreamBroken, match="has not ended"):
        receiver.sha256  # noqa: B018  # never a digest for bytes that did not check out
    receiver.close()


def test_a_receiver_takes_an_intact_stream_s_end_frame(stream: str) -> None:
    data_queue = filestream.queue_names(stream)[0]
    client = redis.Redis.from_url(URL)
    client.rpush(data_queue, b"dabc", _end(b"abc"))
    receiver = filestream.Receiver(stream)
    assert receiver.read() == b"abc" and receiver.read() == b""
    assert receiver.sha256 == hashlib.sha256(b"abc").hexdigest()
    receiver.close()


def test_an_abort_reaches_the_other_end_with_its_reason(stream: str) -> None:
    receiver = filestream.Receiver(stream)
    sender = filestream.Sender(stream)
    block = os.urandom(filestream.CHUNK)
    sender.write(block + b"x")  # a full frame leaves; the rest waits for more
    sender.abort("local file: Input/output error")
    assert receiver.read() == block
    with pytest.raises(filestream.StreamBroken, match="Input/output error"):
        receiver.read()
    receiver.close()
    sender.close()


def test_a_receiver_gives_up_when_the_sender_falls_silent(stream: str) -> None:
    receiver = filestream.Receiver(stream)
    with pytest.raises(
        filestream.StreamBroken, match="the transfer stream broke: nothing from the other end"
    ):
        receiver.read()
    receiver.close()


def test_a_sender_gathers_small_writes_into_full_frames(stream: str) -> None:
    data = os.urandom(2 * filestream.CHUNK + filestream.CHUNK // 2)
    sender = filestream.Sender(stream)
    for start in range(0, len(data), 255 * 1024):  # a download's SFTP blocks
        sender.write(data[start : start + 255 * 1024])
    assert sender.finish() == (len(data), hashlib.sha256(data).hexdigest())
    sender.close()
    queued = redis.Redis.from_url(URL).lrange(filestream.queue_names(stream)[0], 0, -1)
    frames = cast(list[bytes], queued)  # a synchronous client's answer
    assert [len(f) - 1 for f in frames[:-1]] == [filestream.CHUNK, filestream.CHUNK, filestream.CHUNK // 2]
    assert b"".join(f[1:] for f in frames[:-1]) == data
    assert frames[-1] == _end(data)


def test_a_sender_that_does_not_hash_ends_with_the_callers_digest(stream: str) -> None:
    sender = filestream.Sender(stream, hashing=False)
    sender.write(b"abc")
    with pytest.raises(ValueError, match="needs the caller's SHA-256"):
        sender.finish()
    receiver = filestream.Receiver(stream)
    sender.finish(hashlib.sha256(b"abc").hexdigest())
    assert receiver.read() == b"abc" and receiver.read() == b""
    receiver.close()
    sender.close()


def test_a_sink_refuses_to_end_with_a_size_other_than_what_it_sent(stream: str) -> None:
    sink = filestream.SendingSink(stream)
    with sink.writer() as out:
        out.write(b"abc")
    with pytest.raises(filestream.StreamBroken, match="read 4 bytes but 3 were sent"):
        sink.finish(4, hashlib.sha256(b"abcd").hexdigest())
    sink.end.close()


def test_a_push_the_broker_refused_is_raised_not_lost(stream: str) -> None:
    # Pushes are pipelined (their replies read later): a refusal must still surface.
    redis.Redis.from_url(URL).set(filestream.queue_names(stream)[0], b"not a list")
    sender = filestream.Sender(stream)
    sender.write(os.urandom(filestream.CHUNK))  # sent; its reply not read yet
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        sender.finish()
    sender.close()


def test_the_reply_reader_takes_every_kind_of_reply_in_any_pieces() -> None:
    # Replies as Redis writes them, cut at awkward places: a frame larger than the read buffer.
    import socket

    frame = os.urandom(filestream._READ_BUFFER * 3 + 5)
    wire = (
        b":1\r\n+OK\r\n*-1\r\n_\r\n-WRONGTYPE not a list\r\n"
        + b"*2\r\n$3\r\nkey\r\n$"
        + str(len(frame)).encode()
        + b"\r\n"
        + frame
        + b"\r\n:7\r\n"
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:

        def write() -> None:
            for start in range(0, len(wire), 70_001):
                theirs.sendall(wire[start : start + 70_001])

        writer = threading.Thread(target=write)
        writer.start()
        replies = filestream._Replies(ours)
        assert replies.read() == 1 and replies.read() == b"OK"
        assert replies.read() is None and replies.read() is None
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            replies.read()
        assert replies.read() == [b"key", frame]
        assert replies.read() == 7
        writer.join()
        theirs.close()
        with pytest.raises(redis.ConnectionError, match="closed the connection"):  # not an OSError
            replies.read()


def test_the_reply_reader_receives_every_frame_into_one_block() -> None:
    # Not a new zero-filled block per frame: the receiver is done with one when it asks for the next.
    import socket

    frames = [os.urandom(filestream._READ_BUFFER + n) for n in (10, 10, 3)]
    wire = b"".join(b"$%d\r\n" % len(frame) + frame + b"\r\n" for frame in frames)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        writer = threading.Thread(target=theirs.sendall, args=(wire,))
        writer.start()
        replies = filestream._Replies(ours)
        blocks = set()
        for frame in frames:
            got = replies.read()
            assert got == frame
            blocks.add(id(got.obj))
        writer.join()
    assert len(blocks) == 1
