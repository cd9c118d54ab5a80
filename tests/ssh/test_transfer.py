"""SFTP upload, download and listing against a real sshd."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from sshlib.connect import Connection
from sshlib.errors import RemoteFileError
from sshlib.transfer import download, list_dir, upload
from tests.ssh.conftest import sh


def test_it_uploads_bytes_with_digest_and_mode(connection: Connection, remote_dir: str) -> None:
    data = b"hello\x00world\n" * 1000
    result = upload(connection.client, f"{remote_dir}/data.bin", data, mode=0o600)
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert sh(connection, f"sha256sum {remote_dir}/data.bin").split()[0] == result.sha256
    assert sh(connection, f"stat -c %a {remote_dir}/data.bin").strip() == "600"
    assert sh(connection, f"ls -A {remote_dir}") == "data.bin\n"  # no temp file left


def test_it_uploads_a_local_file(connection: Connection, remote_dir: str, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(3 << 20))
    with local.open("rb") as source:
        result = upload(connection.client, f"{remote_dir}/big.bin", source)
    assert result.size == 3 << 20
    assert (
        sh(connection, f"sha256sum {remote_dir}/big.bin").split()[0]
        == hashlib.sha256(local.read_bytes()).hexdigest()
    )


def test_it_refuses_to_overwrite_unless_asked(connection: Connection, remote_dir: str) -> None:
    target = f"{remote_dir}/file.txt"
    upload(connection.client, target, b"first\n")
    with pytest.raises(RemoteFileError, match="exists; pass overwrite=true"):
        upload(connection.client, target, b"second\n")
    assert sh(connection, f"cat {target}") == "first\n"
    sh(connection, f"chmod 750 {target}")
    upload(connection.client, target, b"third\n", overwrite=True)
    assert sh(connection, f"cat {target}") == "third\n"
    assert sh(connection, f"stat -c %a {target}").strip() == "750"  # the replaced file's mode is kept
    upload(connection.client, target, b"fourth\n", overwrite=True, mode=0o604)
    assert sh(connection, f"stat -c %a {target}").strip() == "604"
    assert sh(connection, f"ls -A {remote_dir}") == "file.txt\n"


def test_a_failed_upload_names_the_path_and_leaves_nothing(connection: Connection, remote_dir: str) -> None:
    with pytest.raises(RemoteFileError, match=f"{remote_dir}/missing/x.txt"):
        upload(connection.client, f"{remote_dir}/missing/x.txt", b"data")
    with pytest.raises(RemoteFileError, match=r"/proc/x\.txt"):
        upload(connection.client, "/proc/x.txt", b"data")
    sh(connection, f"mkdir {remote_dir}/sub")
    with pytest.raises(RemoteFileError):
        upload(connection.client, f"{remote_dir}/sub", b"data", overwrite=True)
    assert sh(connection, f"ls -A {remote_dir}") == "sub\n"


def test_it_downloads_inline(connection: Connection, remote_dir: str) -> None:
    sh(
        connection,
        f"printf 'h\\303\\251llo\\n' > {remote_dir}/t.txt; head -c 2048 /dev/urandom > {remote_dir}/r.bin",
    )
    text = download(connection.client, f"{remote_dir}/t.txt", None)
    assert text.content == "héllo\n".encode()
    assert text.size == 7
    assert text.sha256 == hashlib.sha256(text.content).hexdigest()
    binary = download(connection.client, f"{remote_dir}/r.bin", None)
    assert binary.content is not None and len(binary.content) == 2048
    assert binary.sha256 == sh(connection, f"sha256sum {remote_dir}/r.bin").split()[0]


def test_inline_downloads_are_capped(connection: Connection, remote_dir: str) -> None:
    sh(connection, f"head -c 5000 /dev/zero > {remote_dir}/z")
    with pytest.raises(RemoteFileError, match="is 5000 bytes, more than the inline limit of 4096 bytes"):
        download(connection.client, f"{remote_dir}/z", None, max_inline_bytes=4096)


class FileSink:
    """The smallest ``LocalSink``: a temporary file beside ``path``, renamed onto it on success.

    (The fenced one, ``sshcontrol.localfiles.Destination``, is tested with the MCP tools.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown = str(path)

    @contextlib.contextmanager
    def writer(self) -> Iterator[BinaryIO]:
        temp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with temp.open("xb") as out:
                yield out
            temp.replace(self.path)
        finally:
            temp.unlink(missing_ok=True)


def test_it_downloads_to_a_file(connection: Connection, remote_dir: str, tmp_path: Path) -> None:
    sh(connection, f"head -c 3000000 /dev/urandom > {remote_dir}/r.bin")
    dest = tmp_path / "r.bin"
    result = download(connection.client, f"{remote_dir}/r.bin", FileSink(dest))
    assert result.content is None
    assert result.size == 3000000 == dest.stat().st_size
    assert result.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert result.sha256 == sh(connection, f"sha256sum {remote_dir}/r.bin").split()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.bin"]


def test_download_errors_are_clear(connection: Connection, remote_dir: str, tmp_path: Path) -> None:
    with pytest.raises(RemoteFileError, match=f"{remote_dir}/nope: No such file"):
        download(connection.client, f"{remote_dir}/nope", None)
    with pytest.raises(RemoteFileError, match="is a directory"):
        download(connection.client, remote_dir, FileSink(tmp_path / "x"))
    assert list(tmp_path.iterdir()) == []


def test_it_lists_a_directory(connection: Connection, remote_dir: str) -> None:
    sh(
        connection,
        f"cd {remote_dir} && printf 12345 > b.txt && chmod 640 b.txt && mkdir a && touch .hidden"
        " && ln -s b.txt link && touch -d '2024-01-02T03:04:05Z' b.txt",
    )
    listing = list_dir(connection.client, f"{remote_dir}/a/..")
    assert listing.path == remote_dir
    assert not listing.truncated
    assert [e.name for e in listing.entries] == ["a", "b.txt", "link"]
    by_name = {e.name: e for e in listing.entries}
    assert by_name["a"].type == "directory"
    assert (by_name["b.txt"].type, by_name["b.txt"].size, by_name["b.txt"].mode) == ("file", 5, "0640")
    assert by_name["b.txt"].mtime == "2024-01-02T03:04:05Z"
    assert (by_name["link"].type, by_name["link"].symlink_target) == ("symlink", "b.txt")
    assert by_name["b.txt"].symlink_target is None
    hidden = list_dir(connection.client, remote_dir, show_hidden=True)
    assert [e.name for e in hidden.entries] == [".hidden", "a", "b.txt", "link"]
    capped = list_dir(connection.client, remote_dir, show_hidden=True, max_entries=2)
    assert [e.name for e in capped.entries] == [".hidden", "a"]
    assert capped.truncated


def test_listing_errors_are_clear(connection: Connection, remote_dir: str) -> None:
    with pytest.raises(RemoteFileError, match="No such file"):
        list_dir(connection.client, f"{remote_dir}/nope")
    sh(connection, f"touch {remote_dir}/f")
    with pytest.raises(RemoteFileError, match="not a directory"):
        list_dir(connection.client, f"{remote_dir}/f")
