"""Files on many hosts: the per-host operations of ``ssh_upload_many`` and ``ssh_download_many``.

``fleet.run_batch`` chooses the hosts, authorizes each (write for an upload, read for a
download; a host the caller may not use is ``refused``), opens one audit row per host with
the batch id and runs these operations on its thread pool. Each host's transfer goes through
its ``HostCall`` and the dispatcher's ``upload``/``download``, exactly as the single-host
tools' do, so it runs on the worker that holds (or opens) the host's session.

An upload sends the same bytes to every host. The source is hashed once, before the batch;
each host's reported SHA-256 is checked against it, so a local file changed while the batch
ran shows as an error on the hosts that received other bytes, not as a silent difference.

A download writes each host's file to ``<local_dir>/<host name>/<file name>`` inside the
transfer directory. The per-host directory is created below the root one component at a
time, relative to its parent's descriptor with ``O_NOFOLLOW`` (as ``localfiles.py`` walks),
so a symbolic link planted in the transfer directory is refused, never followed; the file
itself is written by the download task through ``localfiles.Destination`` (temporary file,
then a link that never replaces an existing file unless overwrite is asked).
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO

from audit.models import AuditEvent
from audit.writer import Completion
from hosts.access import Permission
from sshcontrol import localfiles
from sshcontrol.fleet import HostResult
from sshcontrol.hostcall import AuditFields, HostCall
from sshcontrol.taskspec import DownloadSpec, UploadSpec

Status = AuditEvent.Status

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Host names are slugs (``Host.name`` is a SlugField); a row written around the form's
# validation with another name gets no directory named after it rather than a surprising one.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_HASH_CHUNK = 1 << 20


@dataclass
class TransferResult(HostResult):
    """One host's transfer: where the file went, its size and SHA-256 as that host's side saw them."""

    remote_path: str = ""
    local_path: str = ""  # downloads: the host's file in the transfer directory
    size: int | None = None
    sha256: str = ""


def sha256_of(source: BinaryIO) -> tuple[int, str]:
    """Size and SHA-256 of an open file, read in chunks (never whole into memory)."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _completion(call: HostCall, size: int, sha256: str) -> Completion:
    return Completion(
        Status.OK,
        call.open_session_id,
        reconnected=bool(call.details.get("reconnected")),
        details=call.details,
        file_size=size,
        file_sha256=sha256,
    )


def _details(reason: str) -> dict[str, Any]:
    return {"reason": reason[:2000]} if reason else {}


@dataclass(frozen=True)
class UploadEach:
    """``ssh_upload_many``'s operation: the same file (or inline content) to each host."""

    spec: UploadSpec
    source: str  # the local file as shown (empty for inline content), for the audit row
    size: int
    sha256: str  # of the source, hashed once before the batch
    reason: str = ""
    tool: str = "ssh_upload_many"
    permission: Permission = Permission.WRITE
    sudo: bool = False

    def audit(self, batch_id: str) -> AuditFields:
        return AuditFields(remote_path=self.spec.remote_path, local_path=self.source, batch_id=batch_id)

    def details(self) -> dict[str, Any]:
        return _details(self.reason)

    def run(self, call: HostCall, call_id: str) -> tuple[HostResult, Completion]:
        sent = call.upload(self.spec)
        if sent.sha256 != self.sha256:
            call.fail(
                f"the host received {sent.size} bytes with SHA-256 {sent.sha256}, not the source's "
                f"{self.sha256}: the local file changed during the batch; upload it again"
            )
        result = TransferResult(
            call.host.name,
            "ok",
            call.event_id,
            session_id=call.open_session_id,
            remote_path=sent.remote_path,
            size=sent.size,
            sha256=sent.sha256,
        )
        return result, _completion(call, sent.size, sent.sha256)


@dataclass(frozen=True)
class DownloadEach:
    """``ssh_download_many``'s operation: one remote file from each host into its own local file."""

    remote_path: str
    local_dir: localfiles.LocalPath  # inside the transfer directory
    file_name: str
    overwrite: bool = False
    reason: str = ""
    tool: str = "ssh_download_many"
    permission: Permission = Permission.READ
    sudo: bool = False

    def audit(self, batch_id: str) -> AuditFields:
        return AuditFields(remote_path=self.remote_path, local_path=self.local_dir.shown, batch_id=batch_id)

    def details(self) -> dict[str, Any]:
        return _details(self.reason)

    def target(self, host: str) -> localfiles.LocalPath:
        """Where ``host``'s file goes: ``<local_dir>/<host>/<file name>``."""
        parts = (*self.local_dir.parts, host, self.file_name)
        return localfiles.LocalPath(parts, str(localfiles.local_root().joinpath(*parts)))

    def run(self, call: HostCall, call_id: str) -> tuple[HostResult, Completion]:
        name = call.host.name
        if not _SAFE_NAME.fullmatch(name):
            call.fail(f"host name {name!r} cannot name a directory; rename the host")
        target = self.target(name)
        try:
            make_directories(target.parts[:-1])
            localfiles.check_destination(target.relative, self.overwrite)
        except localfiles.LocalPathError as exc:
            call.fail(str(exc))
        call.details["local_file"] = target.shown
        got = call.download(
            DownloadSpec(self.remote_path, local_path=target.relative, overwrite=self.overwrite)
        )
        result = TransferResult(
            name,
            "ok",
            call.event_id,
            session_id=call.open_session_id,
            remote_path=got.remote_path,
            local_path=target.shown,
            size=got.size,
            sha256=got.sha256,
        )
        return result, _completion(call, got.size, got.sha256)


def file_name_of(remote_path: str) -> str:
    """The local file name of a download: the remote path's last component."""
    name = posixpath.basename(remote_path.rstrip("/")) if remote_path.strip("/") else ""
    if name in ("", ".", ".."):
        raise localfiles.LocalPathError(f"remote_path {remote_path!r} does not end in a file name")
    return name


def make_directories(parts: tuple[str, ...]) -> None:
    """Create the directories ``parts`` below the transfer directory (owner-only), following no link."""
    shown = "/".join(parts)
    fd = os.open(localfiles.local_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts:
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise localfiles.LocalPathError(
                    f"cannot create directory {shown!r}: {exc.strerror}"
                ) from None
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _not_a_directory(shown, name, fd, exc) from None
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _not_a_directory(shown: str, name: str, fd: int, exc: OSError) -> localfiles.LocalPathError:
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return localfiles.LocalPathError(
            f"local directory {shown!r} is outside the transfer directory: {name!r} is a symbolic link, "
            "and symbolic links are not followed"
        )
    if exc.errno == errno.ENOTDIR or (mode and not stat.S_ISDIR(mode)):
        return localfiles.LocalPathError(f"local directory {shown!r}: {name!r} is not a directory")
    return localfiles.LocalPathError(f"local directory {shown!r} is not usable: {exc.strerror}")
