"""Reading one byte range of a remote file over SFTP: how a model pages through a big file.

A file bigger than what one tool result may carry is read a page at a time: open, seek,
read at most ``length`` bytes, close. Nothing before ``offset`` or past the page crosses
the wire. Kept apart from ``sshlib.transfer`` (whole-file transfers) on purpose: the page
is the unit here, not the file.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import paramiko

from sshlib.errors import ChannelFailed, ConnectionLost, RemoteFileError
from sshlib.sftp_reads import PipelinedReader

# paramiko's read size, which every SFTP server takes (a page is at most a few MiB), and
# enough requests in flight for a page of 1 MiB.
_REQUEST = 32768
_IN_FLIGHT = 32


@dataclass(frozen=True)
class RangeRead:
    remote_path: str
    file_size: int  # as stat saw it before the read
    offset: int
    data: bytes  # at most the length asked for; empty at or past the end


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _sftp(client: paramiko.SSHClient) -> Iterator[paramiko.SFTPClient]:
    try:
        sftp = client.open_sftp()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ChannelFailed(f"could not open an SFTP session: {_reason(exc)}") from None
    try:
        yield sftp
    except (paramiko.SSHException, EOFError) as exc:
        raise ConnectionLost(f"the SSH connection was lost during the SFTP read: {_reason(exc)}") from None
    finally:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            sftp.close()


def read_range(client: paramiko.SSHClient, remote_path: str, offset: int, length: int) -> RangeRead:
    """At most ``length`` bytes of the regular file ``remote_path`` from byte ``offset``."""
    with _sftp(client) as sftp:
        try:
            attrs = sftp.stat(remote_path)
        except OSError as exc:
            raise RemoteFileError(f"{remote_path}: {_reason(exc)}") from None
        if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
            raise RemoteFileError(f"{remote_path} is a directory; use list_dir to see its contents")
        if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
            # A FIFO blocks the SFTP server's open forever and a device (/dev/zero) never ends.
            raise RemoteFileError(f"{remote_path} is not a regular file (a device, FIFO or socket)")
        size = attrs.st_size or 0
        if offset >= size or length <= 0:
            return RangeRead(remote_path, size, offset, b"")
        try:
            with sftp.open(remote_path, "rb") as handle:
                wanted = min(length, size - offset)
                # Not paramiko's prefetch, whose race can strand answers (sshlib/sftp_reads.py).
                reader = PipelinedReader(handle, offset + wanted, _REQUEST, _IN_FLIGHT, start=offset)
                data = bytearray()
                blocks = reader.blocks()
                try:
                    for block in blocks:
                        data += block[: wanted - len(data)]
                        if len(data) >= wanted:
                            break
                finally:
                    blocks.close()  # takes the answers still due before the handle is closed
        except OSError as exc:
            raise RemoteFileError(f"{remote_path}: {_reason(exc)}") from None
        return RangeRead(remote_path, size, offset, bytes(data))
