"""A file copied from one SSH connection to another, streamed through this process's memory only.

The source is read over SFTP with a fixed number of reads in flight, sent from the reading
thread itself (``sshlib.sftp_reads``, as downloads do: paramiko's prefetch thread has a race
that can leave up to the whole file's answers stored and never read), and each block is
written to the destination as it arrives (``sshlib.transfer.upload``: temporary file, rename
into place, pipelined writes, SHA-256 of what was written). Nothing touches a local disk and
nothing holds more than the channel windows and the reads in flight: memory stays flat
whatever the file's size. A failure on either side leaves the destination name untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import BinaryIO, cast

import paramiko
from paramiko.sftp import SFTPError

from sshlib.errors import ConnectionLost, RemoteFileError
from sshlib.sftp_reads import PipelinedReader
from sshlib.transfer import (
    _IN_FLIGHT,
    _OPENSSH_REQUEST,
    _PORTABLE_REQUEST,
    UploadResult,
    _is_openssh,
    _reason,
    _remote_error,
    _sftp,
    _stat_file,
    upload,
)


@dataclass(frozen=True)
class CopyResult:
    source_path: str
    dest_path: str
    size: int
    sha256: str  # of the bytes read from the source and written to the destination


class _SourceBlocks:
    """The source file as ``upload`` reads a local one; its failures are named as the source's.

    The first read request goes out at the first read, after ``upload`` has checked the
    destination: a copy refused there never asks the source for a byte.
    """

    def __init__(self, blocks: Generator[bytes, None, None], channel: paramiko.Channel, where: str) -> None:
        self.blocks = blocks
        self.channel = channel
        self.where = where

    def read(self, _size: int = -1) -> bytes:
        # One block per read (up to 255 KiB with OpenSSH), whatever ``upload`` asks for: it
        # writes each as it comes, so joining or cutting them would only copy bytes.
        try:
            return next(self.blocks, b"")
        except (paramiko.SSHException, EOFError, OSError, SFTPError) as exc:
            # The reader sends requests as it goes: a connection that went away shows as an
            # OSError ("Socket is closed") from the send, and the channel closed with it.
            if isinstance(exc, (paramiko.SSHException, EOFError)) or self.channel.closed:
                raise ConnectionLost(
                    f"the connection to the source was lost while reading {self.where}: {_reason(exc)}"
                ) from None
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
            request = _OPENSSH_REQUEST if _is_openssh(sftp) else _PORTABLE_REQUEST
            reader = PipelinedReader(handle, size, request, _IN_FLIGHT)
            # Closed before the handle, also when the destination fails: the reads still in
            # flight are answered and taken first, so the close meets no stray answer.
            with contextlib.closing(reader.blocks()) as blocks:
                written: UploadResult = upload(
                    dest,
                    dest_path,
                    cast(BinaryIO, _SourceBlocks(blocks, sftp.sock, source_path)),
                    mode=mode,
                    overwrite=overwrite,
                )
    return CopyResult(source_path, written.remote_path, written.size, written.sha256)
