"""Local paths for uploads and downloads, confined to ``SSHCONTROL_LOCAL_ROOT``.

The model names local files; without a boundary it could read ``~/.ssh/id_ed25519`` or
the field key file. Every path is resolved (symlinks included) and must stay inside the
root, which defaults to ``transfers/`` in the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


class LocalPathError(ValueError):
    """A local path is outside the allowed root, missing, or would overwrite a file."""


def local_root() -> Path:
    root = Path(settings.LOCAL_ROOT).expanduser()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root.resolve()


def _confine(raw: str) -> Path:
    if not raw or "\x00" in raw:
        raise LocalPathError("local_path must be a non-empty path without NUL bytes")
    root = local_root()
    try:
        candidate = Path(raw).expanduser()
        if not candidate.is_absolute():
            candidate = root / candidate
        resolved = candidate.resolve(strict=False)
    except (RuntimeError, OSError) as exc:
        # ~unknownuser, a symlink loop, a name too long for the file system: a bad path, said so.
        raise LocalPathError(f"local_path {raw[:200]!r} cannot be resolved: {_reason(exc)}") from None
    if resolved != root and root not in resolved.parents:
        raise LocalPathError(
            f"local_path {raw!r} is outside the transfer directory {root}; use a path inside it"
        )
    return resolved


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__


def source_file(raw: str) -> Path:
    """An existing regular file inside the root, to upload."""
    try:
        return _source_file(raw)
    except OSError as exc:  # checks on a name the file system rejects (e.g. too long)
        raise LocalPathError(f"local_path {raw[:200]!r} is not usable: {_reason(exc)}") from None


def destination_file(raw: str, overwrite: bool) -> Path:
    """A file path inside the root to download into; its directory must exist."""
    try:
        return _destination_file(raw, overwrite)
    except OSError as exc:
        raise LocalPathError(f"local_path {raw[:200]!r} is not usable: {_reason(exc)}") from None


def _source_file(raw: str) -> Path:
    path = _confine(raw)
    if not path.exists():
        raise LocalPathError(f"local file {raw!r} does not exist in the transfer directory {local_root()}")
    if not path.is_file():
        raise LocalPathError(f"local path {raw!r} is not a regular file")
    return path


def _destination_file(raw: str, overwrite: bool) -> Path:
    path = _confine(raw)
    if path.is_dir():
        raise LocalPathError(f"local path {raw!r} is a directory; name a file")
    if path.exists() and not overwrite:
        raise LocalPathError(f"local file {raw!r} already exists; pass overwrite=true to replace it")
    if not path.parent.is_dir():
        raise LocalPathError(f"the directory of local path {raw!r} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise LocalPathError(f"the directory of local path {raw!r} is not writable")
    return path
