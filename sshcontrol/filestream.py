"""The bytes of a transfer between ``mcp_serve`` and the worker that holds the session.

In distributed mode a local path names a file on the machine of the ``mcp_serve`` that
received the call, and inline content is in that process's memory; the SFTP channel is in a
worker, perhaps on another machine. The bytes travel between the two through the broker,
as a stream of 1 MiB frames with a credit window:

- **Through the broker**, because it is the one service both ends must reach anyway: a
  worker usually can reach the broker, not necessarily ``mcp_serve`` (which may listen on
  no port at all when it serves stdio). A direct connection would need a port, a firewall
  opening and a token; the broker already has its credentials and its TLS.
- **Redis lists** when the broker is Redis (``RPUSH`` + ``BLPOP`` of raw frames, each list
  given a TTL so a stream whose both ends died leaves nothing behind for long), and Kombu
  queues otherwise (RabbitMQ: non-durable queues with ``x-expires``, transient messages).
  Kombu's own Redis transport base64-encodes every message into JSON and polls: measured
  here ten times slower than plain lists, hence two small carriers behind one interface.
- **Back-pressure**: the sender never has more than ``SSHCONTROL_TRANSFER_WINDOW_CHUNKS``
  frames unacknowledged; the receiver acknowledges each frame it consumed. Memory on
  either end, and in the broker, is bounded by the window whatever the file's size. The
  sender gathers what it is given into full 1 MiB frames whatever the size of its writes
  (a download hands it 255 KiB SFTP blocks), so the window is always that many MiB.
- **No round trip per frame**: on Redis, a push is written and its reply read later, before
  the next blocking pop on the same connection (replies come in order), so a sender goes
  back to its file while Redis stores the frame, and a receiver's acknowledgement travels
  with its next pop. A download used to wait for the broker four times per MiB and had a
  window of 1 MiB (4 frames of 255 KiB): measured, downloads ran at 0.66-0.75 of ``scp``
  while uploads (1 MiB frames) reached 1.02 (docs/benchmarks.md, "Distributed downloads").
- **Integrity end to end**: both ends run XXH3-128 over the bytes (the sender over what it
  read, the receiver over what it got); the end frame carries the sender's size, XXH3-128 and
  the SHA-256 the audit row records, and the receiver refuses a size or XXH3 mismatch before
  it reports the end (so an upload's temporary file is never renamed into place). SHA-256 is
  computed once per transfer, where the bytes are read: a second SHA-256 on the receiving end
  cost 0.6-0.9 CPU s per GiB (SHA-NI), XXH3 0.06. The check is against damage, not forgery:
  whoever can rewrite frames in the broker can rewrite the end frame too, SHA-256 or not.
- **A clear error when it breaks**: either end that fails sends an abort frame with its
  reason; an end that hears nothing from the other for ``SSHCONTROL_TRANSFER_STALL_SECONDS``
  gives up. Either way :class:`StreamBroken` is raised, and the destination's temporary
  file is removed.

A stream is named by an unguessable id made by ``mcp_serve``, passed to the worker in the
task message; only those two (and whoever can read the broker) know it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Protocol, cast

import xxhash
from django.conf import settings

CHUNK = 1 << 20

_DATA, _END, _ACK, _ABORT = b"d", b"e", b"a", b"x"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# How often a blocked end wakes to check whether its call was cancelled.
_POLL_SECONDS = 0.25


class StreamBroken(Exception):
    """The other end stopped, aborted or fell silent, or the bytes did not arrive intact."""


def new_stream_id() -> str:
    return "st_" + secrets.token_urlsafe(18)


def queue_names(stream_id: str) -> tuple[str, str]:
    """The two queues of a stream: frames to the receiver, acknowledgements to the sender."""
    return f"sshc.stream.{stream_id}.data", f"sshc.stream.{stream_id}.ctl"


# -- carriers -------------------------------------------------------------------------------------


class _Carrier(Protocol):
    def send(self, frame: bytes | memoryview) -> None:
        """Queue ``frame`` for the other end (it may still be on its way: see ``flush``)."""

    def receive(self, timeout: float) -> bytes | bytearray | memoryview | None:
        """The next frame, or None after ``timeout``; valid until the next ``receive``."""

    def flush(self) -> None:
        """Return once every frame sent is stored by the broker (raise if one was refused)."""

    def close(self) -> None: ...


# Seconds a stream's queues outlive their last use when both ends vanished. One constant for
# every process: RabbitMQ refuses to re-declare a queue with a different x-expires.
QUEUE_TTL_SECONDS = 600


# The replies of a stream's Redis connection are read into one buffer of this size, reused
# for its whole life; a frame larger than it is received straight into one block kept for the
# next frame (the receiver is done with a frame when it asks for the next one). redis-py's
# reader took a 1 MiB frame through a BytesIO that grew and shrank, socket reads of up to 2 MiB
# each allocated whole, and three copies: the churn of blocks of varying sizes left 12 MiB in
# glibc's arenas after mcp_serve's first download (docs/benchmarks.md, "Memory of the first
# transfer"). A new zero-filled block per frame, and the copy the receiver handed out, were 10%
# of mcp_serve's CPU in a distributed download (perf, docs/benchmarks.md "Session 10").
_READ_BUFFER = 256 << 10


class _Replies:
    """A reader of RESP2 replies on a connected socket (the stream's own: nothing else reads it)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(_READ_BUFFER)
        self.start = self.end = 0  # the unread bytes are buffer[start:end]
        self.large = bytearray()  # the last reply larger than the buffer (a frame), reused

    def _more(self) -> None:
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buffer):
            left = self.end - self.start
            self.buffer[:left] = self.buffer[self.start : self.end]
            self.start, self.end = 0, left
        self.end += self._recv(memoryview(self.buffer)[self.end :])

    def _recv(self, into: memoryview) -> int:
        # redis-py's exception, as its own reader raised: not an OSError, which the relay
        # would take for a failure of the local file.
        import redis

        try:
            got = self.sock.recv_into(into)
        except OSError as exc:
            raise redis.ConnectionError(f"reading from the broker: {exc}") from None
        if not got:
            raise redis.ConnectionError("the broker closed the connection")
        return got

    def _line(self) -> bytes:
        while True:
            at = self.buffer.find(b"\r\n", self.start, self.end)
            if at >= 0:
                line = bytes(self.buffer[self.start : at])
                self.start = at + 2
                return line
            if self.start == 0 and self.end == len(self.buffer):
                raise _malformed("a reply line longer than the read buffer")
            self._more()

    def _bulk(self, size: int) -> bytearray | memoryview:
        if size > len(self.buffer):
            # A frame: received into the block the previous one used (its consumer is done
            # with it before it asks for the next), not a new zero-filled one each time.
            if len(self.large) < size:
                self.large = bytearray(size)
            view = memoryview(self.large)[:size]
            self._fill(view)
            return view
        out = bytearray(size)
        self._fill(memoryview(out))
        return out

    def _fill(self, view: memoryview) -> None:
        size = len(view)
        have = min(size, self.end - self.start)
        view[:have] = memoryview(self.buffer)[self.start : self.start + have]
        self.start += have
        while have < size:  # the rest straight from the socket, not through the buffer
            have += self._recv(view[have:])
        if self._line():
            raise _malformed("a bulk reply longer than announced")

    def read(self) -> Any:
        """The next reply: None, int, bytes(array) or a list of them; an error reply is raised."""
        import redis

        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise redis.ResponseError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"_":  # RESP3's null, should a server answer with it anyway
            return None
        if kind == b"$":
            return None if int(rest) < 0 else self._bulk(int(rest))
        if kind == b"*":
            return None if int(rest) < 0 else [self.read() for _ in range(int(rest))]
        raise _malformed(f"an unexpected reply: {line[:40]!r}")


def _malformed(what: str) -> Exception:
    import redis

    return redis.ConnectionError(f"the broker sent {what}")


class _RedisCarrier:
    """Frames as items of Redis lists, on one connection of its own, pushes pipelined.

    ``send`` writes RPUSH and EXPIRE and returns without their replies; they are read (in
    order, they are tiny) before the reply of the next blocking pop, or by ``flush``. A
    refused push (an out-of-memory Redis) is raised there. redis-py connects (URL, TLS,
    credentials, database) and writes the commands; the replies are read by ``_Replies``.
    """

    def __init__(self, url: str, outbox: str, inbox: str) -> None:
        import redis

        # RESP2 (redis-py 8 would speak RESP3 with a server that offers it): what _Replies reads.
        self.client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_keepalive=True, protocol=2)
        # redis-py's connection methods carry no type hints: the connection is used as Any.
        # get_connection() connects, and refuses a connection with unread data.
        self.connection: Any = self.client.connection_pool.get_connection()
        # redis-py's own socket (typed as never set): the replies are read from it here.
        sock = cast("socket.socket | None", self.connection._sock)
        if sock is None:
            raise ConnectionError("the broker connection is not open")
        self.replies = _Replies(sock)
        self.outbox, self.inbox = outbox, inbox
        self.owed = 0  # replies to commands written and not yet read

    def send(self, frame: bytes | memoryview) -> None:
        # The list is deleted when it empties, and its TTL with it: set again on every push.
        commands = [("RPUSH", self.outbox, frame), ("EXPIRE", self.outbox, QUEUE_TTL_SECONDS)]
        # Large values and views are written as they are, not copied into the command.
        self.connection.send_packed_command(self.connection.pack_commands(commands), check_health=False)
        self.owed += len(commands)

    def flush(self) -> None:
        while self.owed:
            self.owed -= 1
            self.replies.read()

    def receive(self, timeout: float) -> bytearray | memoryview | None:
        # BLPOP takes whole seconds on old servers; sub-second values need Redis 6.
        self.connection.send_command("BLPOP", self.inbox, max(timeout, 0.01), check_health=False)
        self.flush()
        got = self.replies.read()
        return None if got is None else cast("bytearray | memoryview", got[1])

    def close(self) -> None:
        # Replies left unread make the connection unfit for anyone else: never back to a pool.
        self.connection.disconnect()
        self.client.close()


class _KombuCarrier:
    def __init__(self, outbox: str, inbox: str, window: int) -> None:
        from sshcontrol.celery import app

        # Kombu has no type hints: its names are used as Any rather than silenced one by one.
        kombu: Any = importlib.import_module("kombu")
        Consumer, Exchange, Producer, Queue = kombu.Consumer, kombu.Exchange, kombu.Producer, kombu.Queue

        self.connection = app.connection_for_write()
        self.connection.ensure_connection(max_retries=2)
        channel = self.connection.channel()
        arguments = {"x-expires": QUEUE_TTL_SECONDS * 1000}
        default = Exchange("")  # the default exchange routes to the queue named by the key
        queues = {
            name: Queue(name, default, routing_key=name, durable=False, queue_arguments=arguments)
            for name in (outbox, inbox)
        }
        for queue in queues.values():
            # Both ends declare both queues: whichever starts first, no frame is dropped.
            queue(channel).declare()
        channel.basic_qos(0, window + 2, False)
        self.inbound: deque[bytes] = deque()
        self.consumer = Consumer(
            channel,
            [queues[inbox]],
            no_ack=True,
            callbacks=[self._on_message],
            accept=["application/octet-stream"],
        )
        self.consumer.consume()
        self.producer = Producer(channel, exchange=default, routing_key=outbox)

    def _on_message(self, body: Any, message: Any) -> None:
        self.inbound.append(bytes(message.body))

    def send(self, frame: bytes | memoryview) -> None:
        self.producer.publish(
            bytes(frame),  # the sender reuses its frame buffer
            content_type="application/octet-stream",
            content_encoding="binary",
            delivery_mode=1,
            declare=[],
        )

    def receive(self, timeout: float) -> bytes | None:
        if not self.inbound:
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=timeout)
        return self.inbound.popleft() if self.inbound else None

    def flush(self) -> None:
        pass  # a publish is written when it returns (no publisher confirms, as before)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.cancel()
        self.connection.release()


def _carrier(outbox: str, inbox: str) -> _Carrier:
    url: str = settings.BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return _RedisCarrier(url, outbox, inbox)
    return _KombuCarrier(outbox, inbox, int(settings.TRANSFER_WINDOW_CHUNKS))


def delete(stream_id: str) -> None:
    """Remove a stream's queues (``mcp_serve`` does, once the call is over, whatever its outcome)."""
    names = queue_names(stream_id)
    url: str = settings.BROKER_URL
    with contextlib.suppress(Exception):
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=3)
            try:
                client.delete(*names)
            finally:
                client.close()
            return
        from sshcontrol.celery import app

        with app.connection_for_write() as connection:
            channel = connection.channel()
            for name in names:
                channel.queue_delete(name)


def wait_for_sender(stream_id: str, gave_up: Callable[[], bool], poll: float = 0.05) -> bool:
    """Wait until the sender has put a frame on the stream (True), or ``gave_up()`` (False).

    For a stream between two workers (``sshcontrol/copy_relay.py``): the receiving task is
    sent only once the sending one runs, so a receiver never takes a worker thread while its
    sender still waits for one (both queued behind each other: a deadlock until the stall
    timeout). Nothing consumes the data queue before the receiver starts, so a frame there
    (data, end or abort) means the sender runs.
    """
    data, _ctl = queue_names(stream_id)
    url: str = settings.BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            return _polled(lambda: bool(client.llen(data)), gave_up, poll)
        finally:
            client.close()
    from sshcontrol.celery import app

    with app.connection_for_write() as connection:
        channel = connection.channel()
        arguments = {"x-expires": QUEUE_TTL_SECONDS * 1000}

        def sent() -> bool:
            # Declared as both ends declare it (same arguments); the answer carries the message count.
            declared = channel.queue_declare(
                queue=data, durable=False, auto_delete=False, arguments=arguments
            )
            return bool(declared.message_count)

        return _polled(sent, gave_up, poll)


def _polled(sent: Callable[[], bool], gave_up: Callable[[], bool], poll: float) -> bool:
    while True:
        # Looked at once more after giving up: a sender that finished at once (an empty file)
        # left its frames behind before it ended.
        stop = gave_up()
        if sent():
            return True
        if stop:
            return False
        time.sleep(poll)


def abort_sender(stream_id: str, reason: str) -> None:
    """Tell a stream's sender to stop (its receiver never started, so nobody else will)."""
    data, ctl = queue_names(stream_id)
    with contextlib.suppress(Exception):
        carrier = _carrier(ctl, data)
        try:
            carrier.send(_ABORT + reason.encode()[:2000])
            carrier.flush()
        finally:
            carrier.close()


# -- the two ends ---------------------------------------------------------------------------------


class _End:
    def __init__(self, stream_id: str, *, sending: bool, cancel: threading.Event | None) -> None:
        data, ctl = queue_names(stream_id)
        self.carrier = _carrier(data, ctl) if sending else _carrier(ctl, data)
        self.cancel = cancel or threading.Event()
        self.stall = float(settings.TRANSFER_STALL_SECONDS)
        # The stream's own check, on both ends: XXH3-128 runs at ~16 GB/s here, SHA-256 at ~1.5.
        self.check = xxhash.xxh3_128()
        self.size = 0
        self.closed = False

    def _next(self, waiting_for: str) -> bytes | bytearray | memoryview:
        """The next frame from the other end; StreamBroken after a stall or a cancel."""
        deadline = time.monotonic() + self.stall
        while True:
            if self.cancel.is_set():
                raise StreamBroken("the transfer was stopped")
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamBroken(
                    f"the transfer stream broke: nothing from the other end for {self.stall:g} s "
                    f"(waiting for {waiting_for})"
                )
            frame = self.carrier.receive(min(_POLL_SECONDS, left))
            if frame is not None:
                if frame[:1] == _ABORT:
                    raise StreamBroken(bytes(frame[1:]).decode("utf-8", "replace"))
                return frame

    def abort(self, reason: str) -> None:
        """Tell the other end to stop, with the reason (best effort: it may be gone)."""
        with contextlib.suppress(Exception):
            self.carrier.send(_ABORT + reason.encode()[:2000])
            self.carrier.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.carrier.close()


class Sender(_End):
    """Writes frames to the receiver, never more than the window ahead of its acknowledgements.

    ``hashing=False``: the caller hashes the bytes it writes anyway (a download on the
    worker, ``sshlib.transfer``) and hands the SHA-256 to ``finish``; hashing them twice
    cost the worker 0.6 CPU s per GiB.
    """

    def __init__(
        self, stream_id: str, cancel: threading.Event | None = None, *, hashing: bool = True
    ) -> None:
        super().__init__(stream_id, sending=True, cancel=cancel)
        self.window = int(settings.TRANSFER_WINDOW_CHUNKS)
        self.digest = hashlib.sha256() if hashing else None
        self.sent = 0
        self.acked = 0
        # The frame being gathered, its type byte in front: sent as it is, then refilled.
        self.frame = bytearray(1 + CHUNK)
        self.frame[:1] = _DATA
        self.filled = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self.check.update(view)
        if self.digest is not None:
            self.digest.update(view)
        self.size += len(view)
        taken = 0
        while taken < len(view):
            n = min(CHUNK - self.filled, len(view) - taken)
            self.frame[1 + self.filled : 1 + self.filled + n] = view[taken : taken + n]
            self.filled += n
            taken += n
            if self.filled == CHUNK:
                self._send_frame()
        return len(view)

    def _send_frame(self) -> None:
        while self.sent - self.acked >= self.window:
            frame = self._next("the receiver to take more")
            if frame[:1] == _ACK:
                self.acked = max(self.acked, int(frame[1:]))
        self.carrier.send(memoryview(self.frame)[: 1 + self.filled])
        self.filled = 0
        self.sent += 1

    def finish(self, sha256: str | None = None) -> tuple[int, str]:
        """Send what is left and the end frame: size, XXH3-128 and SHA-256 of everything written.

        ``sha256``: the caller's digest of what it wrote (required when not ``hashing``).
        Returns once the broker holds every frame.
        """
        if self.filled:
            self._send_frame()
        if sha256 is None:
            if self.digest is None:
                raise ValueError("a sender that does not hash needs the caller's SHA-256")
            sha256 = self.digest.hexdigest()
        end = {"size": self.size, "xxh3_128": self.check.hexdigest(), "sha256": sha256}
        self.carrier.send(_END + json.dumps(end).encode())
        self.carrier.flush()
        return self.size, sha256


class Receiver(_End):
    """A readable file of the sender's bytes; its end is reported only once they check out.

    Its ``sha256`` is the sender's SHA-256 of those bytes, known once the end frame arrived and
    the size and XXH3-128 of what came matched it.
    """

    def __init__(self, stream_id: str, cancel: threading.Event | None = None) -> None:
        super().__init__(stream_id, sending=False, cancel=cancel)
        self.pending = memoryview(b"")
        self.frames = 0
        self.ended = False
        self.sent_sha256 = ""

    def read(self, n: int = -1) -> bytes:
        return self.read_view(n).tobytes()

    def read_view(self, n: int = -1) -> memoryview:
        """Like ``read``, without a copy: the bytes are valid only until the next read."""
        if not self.pending and not self.ended:
            self._fill()
        size = len(self.pending) if n is None or n < 0 else n
        out = self.pending[:size]
        self.pending = self.pending[size:]
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def _fill(self) -> None:
        frame = self._next("data")
        if frame[:1] == _DATA:
            chunk = memoryview(frame)[1:]
            self.check.update(chunk)
            self.size += len(chunk)
            self.frames += 1
            self.carrier.send(_ACK + str(self.frames).encode())
            self.pending = chunk
            return
        if frame[:1] == _END:
            sent = json.loads(bytes(frame[1:]))
            got = self.check.hexdigest()
            if sent.get("size") != self.size or sent.get("xxh3_128") != got:
                raise StreamBroken(
                    f"the transfer stream was corrupted: {self.size} bytes arrived with XXH3-128 "
                    f"{got}, {sent.get('size')} were sent with {sent.get('xxh3_128')}"
                )
            sha256 = sent.get("sha256")
            if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
                raise StreamBroken("the transfer stream's end frame carried no SHA-256")
            self.sent_sha256 = sha256
            self.ended = True
            return
        raise StreamBroken("the transfer stream carried an unexpected frame")

    @property
    def sha256(self) -> str:
        """The sender's SHA-256 of the bytes, once the end frame checked out."""
        if not self.ended:
            raise StreamBroken("the transfer stream has not ended yet")
        return self.sent_sha256


# -- the worker's side: what sshlib/transfer.py reads from and writes to ------------------------


@contextlib.contextmanager
def receiving(stream_id: str) -> Iterator[Receiver]:
    """An upload's source on the worker; the sender is told if the upload fails."""
    end = Receiver(stream_id)
    try:
        yield end
    except BaseException as exc:
        end.abort(_why(exc))
        raise
    finally:
        end.close()


class SendingSink:
    """A download's destination on the worker (``sshlib.transfer.LocalSink``): frames to ``mcp_serve``.

    The end frame is sent by ``finish`` with the download's own SHA-256 (the bytes are hashed
    once, by ``sshlib.transfer``), once the download returned.
    """

    shown = "(the caller's transfer directory)"

    def __init__(self, stream_id: str) -> None:
        self.end = Sender(stream_id, hashing=False)

    @contextlib.contextmanager
    def writer(self) -> Iterator[BinaryIO]:
        try:
            yield self.end  # type: ignore[misc]  # write() is all transfer.download uses
        except BaseException as exc:
            self.end.abort(_why(exc))
            raise

    def finish(self, size: int, sha256: str) -> None:
        """End the stream with the download's size and SHA-256 (checked against what was sent)."""
        if size != self.end.size:
            raise StreamBroken(f"the download read {size} bytes but {self.end.size} were sent")
        self.end.finish(sha256)


@contextlib.contextmanager
def sending(stream_id: str) -> Iterator[SendingSink]:
    sink = SendingSink(stream_id)
    try:
        yield sink
    except BaseException as exc:
        sink.end.abort(_why(exc))
        raise
    finally:
        sink.end.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, StreamBroken):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"the worker stopped the transfer: {text or type(exc).__name__}"
