"""A file copied from one SSH connection to another, streamed through this process's memory only.

The source is read over SFTP with prefetching, one block at a time, and each block is
written to the destination as it arrives (``sshlib.transfer.upload``: temporary file, rename
into place, pipelined writes, SHA-256 of what was written). Nothing touches a local disk and
nothing holds more than the channel windows and one block: memory stays flat whatever the
file's size. A failure on either side leaves the destination name untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import BinaryIO, cast

import paramiko

from sshlib.errors import ConnectionLost, RemoteFileError
from sshlib.transfer import UploadResult, _reason, _remote_error, _sftp, _stat_file, upload


@dataclass(frozen=True)
class CopyResult:
    source_path: str
    dest_path: str
    size: int
    sha256: str  # of the bytes read from the source and written to the destination


# Read requests in flight at most. Closing a file waits for the answers to every request sent
# (paramiko's prefetch otherwise sends them all at once), so a copy failing early would first
# read the rest of the source; 256 blocks (8 MiB) are far more than the 2 MiB channel window
# can carry at a time, so the cap costs no speed.
_IN_FLIGHT = 256


class _SourceBlocks:
    """The source file as ``upload`` reads a local one; its failures are named as the source's.

    Prefetching starts at the first read, after ``upload`` has checked the destination: a copy
    refused there never asks the source for a byte.
    """

    def __init__(self, handle: paramiko.SFTPFile, where: str, size: int) -> None:
        self.handle = handle
        self.where = where
        self.size = size
        self.block = handle.MAX_REQUEST_SIZE  # one prefetched block per read (see transfer.py)
        self.started = False

    def read(self, _size: int = -1) -> bytes:
        try:
            if not self.started:
                self.started = True
                self.handle.prefetch(self.size, _IN_FLIGHT)
            return self.handle.read(self.block)
        except (paramiko.SSHException, EOFError) as exc:
            raise ConnectionLost(
                f"the connection to the source was lost while reading {self.where}: {_reason(exc)}"
            ) from None
        except OSError as exc:
            raise RemoteFileError(f"source {self.where}: {_reason(exc)}") from None


def copy(
    source: paramiko.SSHClient,
    source_path: str,
    dest: paramiko.SSHClient,
    dest_path: str,
    *,
    overwrite: bool = False,
    mode: int | None = None,
) -> CopyResult:
    """Copy the regular file ``source_path`` to ``dest_path`` atomically; replace only with ``overwrite``.

    ``source`` and ``dest`` may be the same connection (a copy on one host).
    """
    with _sftp(source) as sftp:
        size = _stat_file(sftp, source_path)
        try:
            handle = sftp.open(source_path, "rb")
        except OSError as exc:
            raise _remote_error(source_path, exc) from None
        with contextlib.closing(handle):
            blocks = _SourceBlocks(handle, source_path, size)
            written: UploadResult = upload(
                dest, dest_path, cast(BinaryIO, blocks), mode=mode, overwrite=overwrite
            )
    return CopyResult(source_path, written.remote_path, written.size, written.sha256)
