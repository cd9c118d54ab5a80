"""SFTP upload, download and listing.

Every call opens its own SFTP channel and closes it, so calls are thread-safe on a shared
connection (an SFTP session costs one channel open and one round trip). Writes go to a
temporary file next to the target and are renamed into place, so readers never see half a
file and a failed transfer leaves nothing behind.

Speed (bench/transfer.py, docs/benchmarks.md "Transfers"): with OpenSSH, reads and writes of
255 KiB (eight times paramiko's 32 KiB), so the Python work per byte for messages and answers
is an eighth (channel packets stay 32 KiB: see ``_MAX_PACKET``); downloads keep a fixed
number of reads in flight from the reading thread itself (sshlib/sftp_reads.py; paramiko's
prefetch thread has a race that held up to the whole file in memory). The SFTP channel's
receive buffer is a queue of the packets received (paramiko's ``array`` moves everything it
holds on every read; a growing ``bytearray`` left 10 MiB of freed blocks in glibc's arenas).
Files are hashed as they stream; nothing holds more than a chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import posixpath
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol

import paramiko
from paramiko.buffered_pipe import BufferedPipe

from sshlib.errors import ChannelFailed, ConnectionLost, RemoteFileError, SshError
from sshlib.sftp_reads import PipelinedReader

_CHUNK = 1 << 20
# An SFTP write request carries 25 bytes and the handle besides its data, and a channel
# packet at most the peer's maximum less 64 (paramiko's margin): this much keeps the whole
# request in one packet for handles up to 39 bytes (OpenSSH's are 4).
_REQUEST_OVERHEAD = 64 + 64
# OpenSSH's sftp-server takes messages up to 256 KiB and reads and writes up to 256 KiB less
# 1 KiB (what its own limits@openssh.com extension announces, and its sftp client uses).
# Eight times paramiko's 32 KiB: an eighth of the requests, answers and Python work per byte.
# Other servers get paramiko's size, which every SFTP server takes.
_OPENSSH_REQUEST = (256 << 10) - 1024
_PORTABLE_REQUEST = 32768
# What this side offers the server for the SFTP channel: packets up to the SSH maximum of 256
# KiB (OpenSSH's sshd still reads sftp-server's output 32 KiB at a time and sends a 255 KiB
# answer as 32 KiB packets: counted in session 10; ``_ReceiveBuffer`` hands the answer out
# whole), and paramiko's 2 MiB window, which bounds what the channel holds in this process.
# Measured (1 GiB, under load): a 4 MiB window was no faster and peaked 12-14 MiB above the
# start; 2 MiB stays flat.
_MAX_PACKET = 256 << 10
_WINDOW = 2 << 20
# Read requests outstanding at most in a download (sshlib/sftp_reads.py): 4 MiB asked for,
# twice the window, so the server always has the next answer ready.
_IN_FLIGHT = 16
# The most a channel read waits to have whole (``_ReceiveBuffer``): an SFTP message (OpenSSH's
# are at most 256 KiB). While it waits, the server may still send the window less what is
# buffered (< this) and what was read but not given back yet (<= half the window): 512 KiB.
_WHOLE_READ = 512 << 10


@dataclass
class UploadResult:
    remote_path: str
    size: int
    sha256: str


@dataclass
class DownloadResult:
    remote_path: str
    size: int
    sha256: str
    content: bytes | None  # set when downloading inline (dest is None)


@dataclass
class FileEntry:
    name: str
    type: str  # "file" | "directory" | "symlink" | "other"
    size: int
    mode: str  # e.g. "0644"
    mtime: str  # ISO 8601 UTC
    symlink_target: str | None


@dataclass
class ListResult:
    path: str  # the resolved remote path
    entries: list[FileEntry]
    truncated: bool


if TYPE_CHECKING:
    _Pipe = BufferedPipe[bytes]  # generic in the stubs only
else:
    _Pipe = BufferedPipe


class _Packets:
    """Received bytes kept as the packets that brought them, taken from the front.

    What paramiko's pipe needs of its buffer (``len``, ``del buf[:n]``, ``del buf[:]``) without
    one contiguous buffer: a ``bytearray`` that grows to the window is reallocated (a new block,
    a copy, the old one freed) whenever it fills with room only at its front, and glibc kept
    those 2 MiB blocks and their gaps: a process's first download grew by 10-13 MiB with the
    2 MiB window, 5-6 MiB with this (docs/benchmarks.md, "Memory of the first transfer").
    """

    def __init__(self) -> None:
        self._parts: deque[bytes] = deque()
        self._size = 0
        self._start = 0  # bytes of the first part already taken

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self._size += len(data)

    def peek(self, limit: int | None = None) -> bytes:
        """The first ``limit`` bytes (all without one), left in place."""
        want = self._size if limit is None else min(limit, self._size)
        if not want:
            return b""
        first = self._parts[0]
        if self._start == 0 and len(first) == want:
            return first  # a whole packet: no copy
        if len(first) - self._start >= want:
            return first[self._start : self._start + want]
        pieces = [memoryview(first)[self._start :]]
        got = len(pieces[0])
        for part in itertools.islice(self._parts, 1, None):
            if got >= want:
                break
            piece = memoryview(part)[: want - got]
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def __delitem__(self, key: slice) -> None:
        drop = self._size if key.stop is None else min(key.stop, self._size)
        self._size -= drop
        while drop:
            left = len(self._parts[0]) - self._start
            if drop < left:
                self._start += drop
                return
            self._parts.popleft()
            self._start = 0
            drop -= left


class _ReceiveBuffer(_Pipe):
    """paramiko's channel receive buffer, kept as a queue of packets (``_Packets``), read whole.

    paramiko keeps it in an ``array``, whose ``del buf[:n]`` moves all that remains: each
    SFTP read (two per packet) moved up to the whole window.

    A read of ``n`` bytes (up to ``_WHOLE_READ``) waits until all ``n`` are here, and the
    writer wakes the reader only then. OpenSSH sends a 255 KiB SFTP answer as 32 KiB channel
    packets: paramiko's pipe woke the SFTP thread for each (a lock hand-over between the two
    threads every packet), and paramiko's SFTP client gathered the pieces with ``out +=``,
    copying the answer 4.5 times; here it is woken once per answer and gets it in one piece.
    A read with a timeout still returns what is there when the timeout ends.
    """

    # paramiko's pipe state, which its type stubs leave out.
    _lock: threading.Lock
    _cv: threading.Condition
    _event: threading.Event | None
    _closed: bool

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _Packets()
        self._wanted = 1  # what the waiting reader needs before it is woken

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer.append(data)

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._buffer_frombytes(data)
            if len(self._buffer) >= self._wanted:
                self._cv.notify_all()

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        want = min(nbytes, _WHOLE_READ)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            try:
                while len(self._buffer) < want and not self._closed:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break  # paramiko's read: what is there, or its timeout if nothing is
                    self._wanted = want
                    self._cv.wait(left)
            finally:
                self._wanted = 1
        return super().read(nbytes, None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        return self._buffer.peek(limit)


class _SFTPClient(paramiko.SFTPClient):
    """paramiko's client, sending a request without re-copying what is left of it per packet.

    A 255 KiB write request leaves in eight channel packets; paramiko slices the remaining
    ``bytes`` after each (copying 4.5 times the request in all), a view slices for free.
    """

    def _write_all(self, out: bytes) -> None:
        view = memoryview(out)
        while view:
            sent = self.sock.send(view)  # type: ignore[arg-type]  # any buffer: it is sliced and written
            if sent <= 0:
                raise EOFError()
            view = view[sent:]


def _open_sftp(client: paramiko.SSHClient) -> paramiko.SFTPClient:
    """``client.open_sftp()``, with the receive buffer swapped before the server can send anything."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("the connection is closed")
    channel = transport.open_session(window_size=_WINDOW, max_packet_size=_MAX_PACKET)
    channel.in_buffer = _ReceiveBuffer()
    # The window is given back once half of it was read, as OpenSSH does, not every tenth
    # (paramiko's): a download sent one WINDOW_ADJUST per 255 KiB answer besides its read request.
    channel.in_window_threshold = _WINDOW // 2
    channel.invoke_subsystem("sftp")
    return _SFTPClient(channel)


@contextlib.contextmanager
def _sftp(client: paramiko.SSHClient) -> Iterator[paramiko.SFTPClient]:
    try:
        sftp = _open_sftp(client)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ChannelFailed(f"could not open an SFTP session: {_reason(exc)}") from None
    try:
        yield sftp
    except (paramiko.SSHException, EOFError) as exc:
        raise ConnectionLost(
            f"the SSH connection was lost during the SFTP operation: {_reason(exc)}"
        ) from None
    finally:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            sftp.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _remote_error(path: str, exc: BaseException) -> RemoteFileError:
    return RemoteFileError(f"{path}: {_reason(exc)}")


def _temp_name(path: str) -> str:
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.sshc-{secrets.token_hex(6)}.tmp")


def _lstat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.lstat(path)
    except FileNotFoundError:
        return None


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    return _lstat(sftp, path) is not None


def _exists_error(path: str) -> RemoteFileError:
    return RemoteFileError(f"{path} exists; pass overwrite=true to replace it")


class _LocalReadError(Exception):
    """Reading the local source failed: reported as such, not as a remote error."""


def _local_chunks(source: BinaryIO | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), _CHUNK):
            yield source[start : start + _CHUNK]
        return
    # An open file, never a name: the caller opened it inside its fence, and re-opening by
    # name would let a swapped symbolic link change what is read.
    try:
        while chunk := source.read(_CHUNK):
            yield chunk
    except OSError as exc:
        raise _LocalReadError(f"local file {getattr(source, 'name', '?')}: {_reason(exc)}") from None


class LocalSink(Protocol):
    """Where a download is written: a temporary file that becomes the destination if the block succeeds."""

    shown: str

    def writer(self) -> AbstractContextManager[BinaryIO]: ...


def _upload_mode(
    sftp: paramiko.SFTPClient, remote_path: str, mode: int | None, overwrite: bool
) -> int | None:
    """Refuse an existing file unless ``overwrite``; the mode the new file gets (None: the default)."""
    try:
        existing = _lstat(sftp, remote_path)
    except OSError as exc:
        raise _remote_error(remote_path, exc) from None
    if existing is not None and not overwrite:
        raise _exists_error(remote_path)
    if mode is None and existing is not None and stat.S_ISREG(existing.st_mode or 0):
        mode = stat.S_IMODE(existing.st_mode or 0)  # replacing a script must not drop its x bit
    return mode


def _write_all(
    handle: paramiko.SFTPFile,
    source: BinaryIO | bytes,
    mode: int | None,
    source_sha256: Callable[[], str] | None,
) -> tuple[int, str]:
    """Write ``source`` to a freshly created remote file; (size, SHA-256 hex) of what was written."""
    # Before any data is written, so a 0600 file is never readable with content in it.
    if mode is not None:
        handle.chmod(mode)
    # Do not wait for each write's acknowledgement: errors still surface at close.
    handle.set_pipelined(True)
    # Unbuffered (see upload), so each write is cut into requests of exactly this size.
    handle.MAX_REQUEST_SIZE = _write_request_size(handle.sftp)
    digest = hashlib.sha256() if source_sha256 is None else None
    size = 0
    for chunk in _local_chunks(source):
        handle.write(chunk)
        if digest is not None:
            digest.update(chunk)
        size += len(chunk)
    if source_sha256 is not None:
        return size, source_sha256()
    assert digest is not None
    return size, digest.hexdigest()


def _is_openssh(sftp: paramiko.SFTPClient) -> bool:
    transport = sftp.sock.get_transport()
    return "OpenSSH" in (transport.remote_version or "")


def _write_request_size(sftp: paramiko.SFTPClient) -> int:
    if _is_openssh(sftp):
        return _OPENSSH_REQUEST
    # One request per packet: a 32 KiB request would take a second, 30-byte packet each.
    return min(_PORTABLE_REQUEST, sftp.sock.out_max_packet_size - _REQUEST_OVERHEAD)


def _move_into_place(sftp: paramiko.SFTPClient, temp: str, remote_path: str, overwrite: bool) -> None:
    if overwrite:
        sftp.posix_rename(temp, remote_path)
        return
    try:
        # OpenSSH renames with link()+unlink(): it refuses to replace, with no race.
        sftp.rename(temp, remote_path)
    except OSError:
        if _exists(sftp, remote_path):
            raise _exists_error(remote_path) from None
        raise


def upload(
    client: paramiko.SSHClient,
    remote_path: str,
    source: BinaryIO | bytes,
    mode: int | None = None,
    overwrite: bool = False,
    source_sha256: Callable[[], str] | None = None,
) -> UploadResult:
    """Write ``source`` to ``remote_path`` atomically; refuse to replace a file unless ``overwrite``.

    ``source_sha256``: the source hashes what it hands out and this gives its SHA-256 once
    it is read to its end, instead of a second hash here (0.6 CPU s per GiB).
    """
    if not remote_path or remote_path.endswith("/"):
        raise RemoteFileError(f"{remote_path or '(empty path)'}: not a file path")
    left: list[str] = []
    try:
        return _upload(client, remote_path, source, mode, overwrite, source_sha256, left)
    except SshError as exc:
        if left:
            exc.leftover = left[0]
        raise


def _upload(
    client: paramiko.SSHClient,
    remote_path: str,
    source: BinaryIO | bytes,
    mode: int | None,
    overwrite: bool,
    source_sha256: Callable[[], str] | None,
    left: list[str],
) -> UploadResult:
    """``upload``; a temporary file it could not remove is appended to ``left``."""
    with _sftp(client) as sftp:
        mode = _upload_mode(sftp, remote_path, mode, overwrite)
        temp = _temp_name(remote_path)
        created = False
        try:
            # bufsize 0: paramiko's 8 KiB write buffer would only copy each chunk twice more.
            with sftp.open(temp, "wxb", bufsize=0) as handle:
                created = True
                size, sha256 = _write_all(handle, source, mode, source_sha256)
            _move_into_place(sftp, temp, remote_path, overwrite)
            created = False
        except _LocalReadError as exc:
            raise RemoteFileError(str(exc)) from None
        except OSError as exc:
            raise _remote_error(remote_path, exc) from None
        finally:
            if created:
                try:
                    sftp.remove(temp)
                except (OSError, paramiko.SSHException, EOFError):
                    left.append(temp)
    return UploadResult(remote_path=remote_path, size=size, sha256=sha256)


def remove_file(client: paramiko.SSHClient, remote_path: str) -> None:
    """Remove one remote file (a failed transfer's temporary file, see ``SshError.leftover``)."""
    with _sftp(client) as sftp:
        sftp.remove(remote_path)


def _stat_file(sftp: paramiko.SFTPClient, remote_path: str) -> int:
    try:
        attrs = sftp.stat(remote_path)
    except OSError as exc:
        raise _remote_error(remote_path, exc) from None
    if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
        raise RemoteFileError(f"{remote_path} is a directory; use list_dir to see its contents")
    if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
        # A FIFO blocks the SFTP server's open forever and a device (/dev/zero) never ends.
        raise RemoteFileError(f"{remote_path} is not a regular file (a device, FIFO or socket)")
    return attrs.st_size or 0


def download(
    client: paramiko.SSHClient,
    remote_path: str,
    dest: LocalSink | None,
    max_inline_bytes: int = 1 << 20,
) -> DownloadResult:
    """Fetch ``remote_path`` into memory (``dest`` None, size-capped) or atomically into ``dest``.

    ``dest`` has already checked whether it may replace an existing file.
    """
    with _sftp(client) as sftp:
        size = _stat_file(sftp, remote_path)
        if dest is None and size > max_inline_bytes:
            raise RemoteFileError(
                f"{remote_path} is {size} bytes, more than the inline limit of {max_inline_bytes} bytes; "
                "pass local_path to download it to a file"
            )
        try:
            with sftp.open(remote_path, "rb") as handle:
                request = _OPENSSH_REQUEST if _is_openssh(sftp) else _PORTABLE_REQUEST
                reader = PipelinedReader(handle, size, request, _IN_FLIGHT)
                if dest is None:
                    return _read_inline(reader, remote_path, max_inline_bytes)
                return _read_to_file(reader, remote_path, dest)
        except OSError as exc:
            raise _remote_error(remote_path, exc) from None


def _read_inline(reader: PipelinedReader, remote_path: str, limit: int) -> DownloadResult:
    # The file may have grown since stat: never hold more than the cap.
    content = bytearray()
    for block in reader.blocks():
        content += block
        if len(content) > limit:
            break
    if len(content) > limit:
        raise RemoteFileError(
            f"{remote_path} grew past the inline limit of {limit} bytes while downloading; "
            "pass local_path to download it to a file"
        )
    return DownloadResult(remote_path, len(content), hashlib.sha256(content).hexdigest(), bytes(content))


def _read_to_file(reader: PipelinedReader, remote_path: str, dest: LocalSink) -> DownloadResult:
    digest = hashlib.sha256()
    total = 0
    with dest.writer() as out:
        for chunk in reader.blocks():
            try:
                out.write(chunk)
            except OSError as exc:
                raise RemoteFileError(f"local file {dest.shown}: {_reason(exc)}") from None
            digest.update(chunk)
            total += len(chunk)
    return DownloadResult(remote_path=remote_path, size=total, sha256=digest.hexdigest(), content=None)


def _file_type(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def list_dir(
    client: paramiko.SSHClient, path: str, show_hidden: bool = False, max_entries: int = 1000
) -> ListResult:
    """The entries of a remote directory, sorted by name; symlinks are reported, not followed."""
    with _sftp(client) as sftp:
        try:
            resolved = sftp.normalize(path or ".")
            attrs = sftp.listdir_attr(resolved)
        except OSError as exc:
            # OpenSSH reports opendir() on a file as "no such file": tell the two apart.
            try:
                target = sftp.stat(path)
            except OSError:
                target = None
            if target is not None and target.st_mode is not None and not stat.S_ISDIR(target.st_mode):
                raise RemoteFileError(f"{path} is not a directory") from None
            raise _remote_error(path, exc) from None
        visible = sorted(
            (a for a in attrs if show_hidden or not a.filename.startswith(".")), key=lambda a: a.filename
        )
        truncated = len(visible) > max_entries
        entries: list[FileEntry] = []
        for attr in visible[: max(0, max_entries)]:
            mode = attr.st_mode or 0
            kind = _file_type(mode)
            target_path: str | None = None
            if kind == "symlink":
                with contextlib.suppress(OSError):
                    target_path = sftp.readlink(posixpath.join(resolved, attr.filename))
            mtime = datetime.fromtimestamp(attr.st_mtime or 0, tz=UTC).isoformat().replace("+00:00", "Z")
            entries.append(
                FileEntry(
                    name=attr.filename,
                    type=kind,
                    size=attr.st_size or 0,
                    mode=f"{stat.S_IMODE(mode):04o}",
                    mtime=mtime,
                    symlink_target=target_path,
                )
            )
    return ListResult(path=resolved, entries=entries, truncated=truncated)
