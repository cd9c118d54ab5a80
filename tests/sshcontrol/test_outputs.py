"""The kept-output store: every byte kept is read back exactly once, by offset, while written and after."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sshcontrol import outputs
from sshcontrol.outputs import KeptOutput, OutputNotFound, Page
from sshlib.capture import Stream
from sshlib.connect import open_connection
from sshlib.execute import ExecRequest, run_command
from tests.ssh.conftest import password_spec
from tests.sshd import SshServer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    with override_settings(DATA_DIR=tmp_path):
        yield tmp_path / "outputs"


def read_all(output_id: str, stream: Stream, page_size: int) -> tuple[bytes, int, list[Page]]:
    """Every page from offset 0 to the end: the bytes, the bytes skipped, the pages."""
    offset, data, skipped, pages = 0, bytearray(), 0, []
    while True:
        page = outputs.read(output_id, stream, offset, page_size)
        pages.append(page)
        assert page.offset == offset + page.skipped
        data += page.data
        skipped += page.skipped
        offset = page.next_offset
        if page.complete:
            return bytes(data), skipped, pages
        assert page.data or page.skipped, "a page of a finished output made no progress"


def test_small_output_never_touches_the_disk(store: Path) -> None:
    kept = KeptOutput(outputs.new_output_id(), spill_after=1024)
    kept.write("stdout", b"x" * 1024)
    kept.close()
    assert not kept.spilled
    assert not store.exists()
    with pytest.raises(OutputNotFound):
        outputs.read(kept.output_id, "stdout", 0, 10)


def test_spilled_output_reads_back_in_pages_and_files_are_owner_only(store: Path) -> None:
    kept = KeptOutput(outputs.new_output_id(), spill_after=10)
    kept.write("stderr", b"early error\n")  # before the spill: written out with it
    kept.write("stdout", b"a" * 11)
    kept.write("stdout", b"b" * 5)
    assert kept.spilled and kept.totals() == (16, 12)
    page = outputs.read(kept.output_id, "stdout", 0, 100)
    assert page.data == b"a" * 11 + b"b" * 5 and not page.complete  # still running
    kept.close()
    assert read_all(kept.output_id, "stdout", 3)[0] == b"a" * 11 + b"b" * 5
    assert read_all(kept.output_id, "stderr", 100)[0] == b"early error\n"
    directory = store / kept.output_id
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE((directory / s).stat().st_mode) for s in ("stdout", "stderr")} == {0o600}


def test_beyond_the_limit_head_and_tail_are_kept_and_the_middle_is_reported_skipped(store: Path) -> None:
    kept = KeptOutput(outputs.new_output_id(), keep_bytes=1000, spill_after=0)
    data = bytes(random.Random(1).randbytes(10_000))
    for start in range(0, len(data), 77):
        kept.write("stdout", data[start : start + 77])
    kept.close()
    got, skipped, _ = read_all(kept.output_id, "stdout", 64)
    assert got == data[:500] + data[-500:]
    assert skipped == 9000
    # A reader that asks for the middle is moved to the first byte still kept.
    page = outputs.read(kept.output_id, "stdout", 600, 10)
    assert (page.offset, page.skipped, page.data) == (9500, 8900, data[9500:9510])
    # Past the end: an empty, complete page.
    end = outputs.read(kept.output_id, "stdout", 20_000, 10)
    assert (end.data, end.next_offset, end.complete) == (b"", 10_000, True)


@hsettings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=40),
    keep=st.integers(min_value=2, max_value=600),
    page_size=st.integers(min_value=1, max_value=250),
)
def test_any_writes_read_back_as_head_plus_tail(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes], keep: int, page_size: int
) -> None:
    with override_settings(DATA_DIR=tmp_path_factory.mktemp("outputs")):
        kept = KeptOutput(outputs.new_output_id(), keep_bytes=keep, spill_after=0)
        for chunk in chunks:
            kept.write("stdout", chunk)
        kept.close()
        data = b"".join(chunks)
        head = keep // 2
        expected = data if len(data) <= keep else data[:head] + data[len(data) - (keep - head) :]
        got, skipped, _ = read_all(kept.output_id, "stdout", page_size)
        assert got == expected
        assert skipped == len(data) - len(expected)


def test_a_reader_racing_the_writer_never_gets_a_wrong_byte(store: Path) -> None:
    """Bytes the ring overwrote while a reader copied them are skipped, never returned."""
    kept = KeptOutput(outputs.new_output_id(), keep_bytes=4096, spill_after=0)
    done = threading.Event()

    def write() -> None:
        for n in range(20_000):
            kept.write("stdout", b"%09d\n" % n)  # each byte's value follows from its offset
        kept.close()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    checked = 0
    offset = 0
    while True:
        page = outputs.read(kept.output_id, "stdout", offset, 1500)
        for i, byte in enumerate(page.data):
            position = page.offset + i
            assert byte == (b"%09d\n" % (position // 10))[position % 10]
        checked += len(page.data)
        offset = page.next_offset
        if page.complete:
            break
    writer.join()
    assert checked > 0 and done.is_set()


def test_ids_are_path_components_only(store: Path) -> None:
    for bad in ("../etc", "out_/../../x", "", "out_short"):
        with pytest.raises(OutputNotFound):
            outputs.read(bad, "stdout", 0, 1)
    with pytest.raises(ValueError, match="stream"):
        outputs.read(outputs.new_output_id(), "stdin", 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        outputs.read(outputs.new_output_id(), "stdout", -1, 1)


def test_prune_removes_what_was_last_written_before_the_cut_off(store: Path) -> None:
    old, new = (KeptOutput(outputs.new_output_id(), spill_after=0) for _ in range(2))
    for kept in (old, new):
        kept.write("stdout", b"x")
        kept.close()
    for stream in ("stdout", "stderr"):
        os.utime(store / old.output_id / stream, (1_000_000, 1_000_000))
    assert outputs.prune(3600) == 1
    assert not (store / old.output_id).exists()
    assert (store / new.output_id).exists()


def test_a_real_command_output_of_20_mib_is_kept_and_paged_exactly(store: Path, sshd: SshServer) -> None:
    """The SSH runtime tells the store every byte as it arrives, past the result's own cap."""
    connection = open_connection(password_spec(sshd))
    try:
        kept = KeptOutput(outputs.new_output_id())
        command = "seq 1 2500000; echo done >&2"  # about 18.5 MiB
        result = run_command(
            connection.client, ExecRequest(command, timeout=60, max_output_bytes=4096), sink=kept
        )
        kept.close()
        remote = run_command(connection.client, ExecRequest("seq 1 2500000 | sha256sum", timeout=60))
    finally:
        connection.close()
    assert result.exit_status == 0 and result.stdout_truncated
    assert kept.totals() == (result.stdout_bytes, 5)
    got, skipped, pages = read_all(kept.output_id, "stdout", 1 << 20)
    assert skipped == 0 and len(got) == result.stdout_bytes > 18 << 20
    assert hashlib.sha256(got).hexdigest() == remote.stdout.split()[0]
    assert not got.startswith(b"__sshcontrol_pgid")  # the runtime's marker line is not output
    assert read_all(kept.output_id, "stderr", 100)[0] == b"done\n"
    assert len(pages) == -(-len(got) // (1 << 20))
