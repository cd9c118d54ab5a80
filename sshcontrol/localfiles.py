"""Local paths for uploads and downloads, confined to ``SSHCONTROL_LOCAL_ROOT``.

The model names local files; without a boundary it could read ``~/.ssh/id_ed25519`` or
the field key file. Checking a resolved path and then opening it by name can be raced: a
symbolic link swapped in between sends the open outside the root. So nothing here opens a
local file by its full name. The root directory is opened once, and every component below
it is opened relative to its parent's descriptor with ``O_NOFOLLOW`` (directories also with
``O_DIRECTORY``): a symbolic link anywhere below the root is refused, never followed. A
source is handed on as the open file; a download is written to a temporary file created in
the opened directory and renamed there (both names relative to that descriptor), so a
swap after the checks can only make the call fail, never move a read or a write outside.

``..`` is resolved lexically before the walk (nothing is followed, so the text is the
truth) and a path that climbs above the root is refused. Files are created owner-only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; the
# descriptor is checked to be a regular file before anything is read from it.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o600


class LocalPathError(ValueError):
    """A local path is outside the allowed root, missing, or would overwrite a file."""


def local_root() -> Path:
    root = Path(settings.LOCAL_ROOT).expanduser()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root.resolve()


@dataclass(frozen=True)
class LocalPath:
    """A path inside the root: its components below the root, and the full name to show."""

    parts: tuple[str, ...]
    shown: str

    @property
    def relative(self) -> str:
        """What a task is sent: the worker walks it below its own root."""
        return "/".join(self.parts)


def locate(raw: str) -> LocalPath:
    """The components of ``raw`` below the root, decided on the text alone (no file is touched).

    Relative paths are taken from the root; absolute ones must name a place inside it.
    """
    if not raw or "\x00" in raw:
        raise LocalPathError("local_path must be a non-empty path without NUL bytes")
    root = local_root()
    try:
        expanded = os.path.expanduser(raw)
    except (RuntimeError, OSError) as exc:
        raise LocalPathError(f"local_path {raw[:200]!r} cannot be resolved: {_reason(exc)}") from None
    relative: str | None
    if os.path.isabs(expanded):
        relative = None
        normal = posixpath.normpath(expanded)
        # The configured spelling of the root too (it may itself be a symlink the admin chose).
        configured = posixpath.normpath(os.path.abspath(Path(settings.LOCAL_ROOT).expanduser()))
        for base in (str(root), configured):
            if normal == base or normal.startswith(base.rstrip("/") + "/"):
                relative = posixpath.relpath(normal, base)
                break
    else:
        relative = posixpath.normpath(expanded)
    if relative is None or relative == ".." or relative.startswith("../"):
        raise LocalPathError(
            f"local_path {raw!r} is outside the transfer directory {root}; use a path inside it"
        )
    parts = tuple(p for p in relative.split("/") if p not in ("", "."))
    return LocalPath(parts=parts, shown=str(root.joinpath(*parts)))


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__


def _open_root() -> int:
    # The root itself is the admin's choice and may be reached through a symlink; below it, nothing is.
    return os.open(local_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _symlink_refusal(raw: str, name: str) -> LocalPathError:
    return LocalPathError(
        f"local_path {raw!r} is outside the transfer directory {local_root()}: {name!r} is a symbolic "
        "link, and symbolic links are not followed"
    )


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_parent(raw: str, path: LocalPath) -> int:
    """A descriptor on the directory holding the last component, walked without following links."""
    fd = _open_root()
    try:
        for name in path.parts[:-1]:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if _is_symlink(name, fd):
                    raise _symlink_refusal(raw, name) from None
                if exc.errno == errno.ENOENT:
                    raise LocalPathError(f"the directory of local path {raw!r} does not exist") from None
                if exc.errno == errno.ENOTDIR:
                    raise LocalPathError(f"local path {raw!r}: {name!r} is not a directory") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _usable(raw: str, exc: OSError) -> LocalPathError:
    return LocalPathError(f"local_path {raw[:200]!r} is not usable: {_reason(exc)}")


@contextlib.contextmanager
def open_source(raw: str) -> Iterator[BinaryIO]:
    """The regular file ``raw`` inside the root, open for reading; refused for anything else."""
    path = locate(raw)
    if not path.parts:
        raise LocalPathError(f"local path {raw!r} is not a regular file")
    try:
        parent = _open_parent(raw, path)
    except OSError as exc:
        raise _usable(raw, exc) from None
    name = path.parts[-1]
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        except OSError as exc:
            if _is_symlink(name, parent):
                raise _symlink_refusal(raw, name) from None
            if exc.errno == errno.ENOENT:
                raise LocalPathError(
                    f"local file {raw!r} does not exist in the transfer directory {local_root()}"
                ) from None
            raise _usable(raw, exc) from None
    finally:
        os.close(parent)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise LocalPathError(f"local path {raw!r} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        yield handle


def check_source(raw: str) -> LocalPath:
    """Refuse an unusable source before a call starts; the task opens it again, just as fenced."""
    with open_source(raw):
        return locate(raw)


class Destination:
    """A file name in an open directory inside the root, written through a temporary file there.

    Close it (or use it as a context manager) to release the directory descriptor.
    """

    def __init__(self, raw: str, overwrite: bool) -> None:
        path = locate(raw)
        self.raw = raw
        self.shown = path.shown
        self.overwrite = overwrite
        if not path.parts:
            raise LocalPathError(f"local path {raw!r} is a directory; name a file")
        self.name = path.parts[-1]
        try:
            self.dir_fd = _open_parent(raw, path)
        except OSError as exc:
            raise _usable(raw, exc) from None
        try:
            self._check_target()
        except BaseException:
            self.close()
            raise

    def _check_target(self) -> None:
        try:
            existing = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise _usable(self.raw, exc) from None
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise LocalPathError(f"local path {self.raw!r} is a directory; name a file")
            if stat.S_ISLNK(existing.st_mode):
                raise _symlink_refusal(self.raw, self.name)
            if not stat.S_ISREG(existing.st_mode):
                raise LocalPathError(f"local path {self.raw!r} is not a regular file")
            if not self.overwrite:
                raise self._exists()
        if not os.access(".", os.W_OK, dir_fd=self.dir_fd):
            raise LocalPathError(f"the directory of local path {self.raw!r} is not writable")

    def _exists(self) -> LocalPathError:
        return LocalPathError(f"local file {self.raw!r} already exists; pass overwrite=true to replace it")

    @contextlib.contextmanager
    def writer(self) -> Iterator[BinaryIO]:
        """A new owner-only temporary file in the directory; moved to the name if the block succeeds."""
        temp = f".{self.name[:200]}.sshc-{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temp, _CREATE_FLAGS, FILE_MODE, dir_fd=self.dir_fd)
        except OSError as exc:
            raise _usable(self.raw, exc) from None
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)  # whatever the umask
                yield out
            self._commit(temp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self.dir_fd)
            raise

    def _commit(self, temp: str) -> None:
        if self.overwrite:
            try:
                os.rename(temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            except OSError as exc:
                raise _usable(self.raw, exc) from None
            return
        try:
            # link() never replaces: a file that appeared since the check is kept, not clobbered.
            os.link(temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd, follow_symlinks=False)
        except FileExistsError:
            raise self._exists() from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise _usable(self.raw, exc) from None
            # A file system without hard links: check, then rename (still inside this directory).
            self._rename_if_absent(temp)
            return
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=self.dir_fd)

    def _rename_if_absent(self, temp: str) -> None:
        try:
            os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            raise self._exists()
        try:
            os.rename(temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except FileExistsError:
            raise self._exists() from None
        except OSError as exc:
            raise _usable(self.raw, exc) from None

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_destination(raw: str, overwrite: bool) -> LocalPath:
    """Refuse an unusable destination before a call starts; the task opens it again, just as fenced."""
    with Destination(raw, overwrite):
        return locate(raw)
