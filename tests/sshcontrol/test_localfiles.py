"""The local file fence's own guarantees: what it opened stays what it reads and writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sshcontrol.localfiles import Destination, LocalPathError, local_root, open_source
from tests.fence_race import BENIGN


def test_it_keeps_a_file_that_appears_while_a_download_without_overwrite_runs(tmp_path: Path) -> None:
    root = local_root()
    (root / "late.txt").unlink(missing_ok=True)
    with (
        Destination("late.txt", overwrite=False) as dest,
        pytest.raises(LocalPathError, match="already exists"),
        dest.writer() as out,
    ):
        out.write(b"downloaded")
        (root / "late.txt").write_bytes(b"appeared meanwhile")
    assert (root / "late.txt").read_bytes() == b"appeared meanwhile"
    assert [p.name for p in root.iterdir() if p.name.startswith(".late.txt")] == []
    (root / "late.txt").unlink()


def test_it_reads_the_file_it_opened_even_if_the_name_moves(tmp_path: Path) -> None:
    root = local_root()
    (root / "moving.txt").write_bytes(BENIGN)
    outside = tmp_path / "secret"
    outside.write_bytes(b"SECRET\n")
    with open_source("moving.txt") as handle:
        (root / "moving.txt").unlink()
        (root / "moving.txt").symlink_to(outside)
        assert handle.read() == BENIGN
    (root / "moving.txt").unlink()


def test_it_refuses_directories_and_links_on_the_way(tmp_path: Path) -> None:
    root = local_root()
    (root / "adir").mkdir(exist_ok=True)
    with pytest.raises(LocalPathError, match="not a regular file"), open_source("adir"):
        pass
    (root / "via").unlink(missing_ok=True)
    (root / "via").symlink_to(root / "adir")
    with pytest.raises(LocalPathError, match="'via' is a symbolic link"):
        Destination("via/new.txt", overwrite=True)
    with pytest.raises(LocalPathError, match="outside the transfer directory"):
        Destination("adir/../../escape.txt", overwrite=True)
    assert not (root.parent / "escape.txt").exists()
    (root / "via").unlink()
    (root / "adir").rmdir()
