"""SFTP upload, download and listing. CONTRACT — to be implemented."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paramiko


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


def upload(
    client: paramiko.SSHClient,
    remote_path: str,
    source: Path | bytes,
    mode: int | None = None,
    overwrite: bool = False,
) -> UploadResult:
    raise NotImplementedError


def download(
    client: paramiko.SSHClient,
    remote_path: str,
    dest: Path | None,
    overwrite: bool = False,
    max_inline_bytes: int = 1 << 20,
) -> DownloadResult:
    raise NotImplementedError


def list_dir(client: paramiko.SSHClient, path: str, show_hidden: bool = False, max_entries: int = 1000) -> ListResult:
    raise NotImplementedError
