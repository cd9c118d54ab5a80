"""The data directory's files are the owner's alone, checked as a second real local user.

A data directory that already exists with mode 0755 (in a directory everybody can enter)
is the attack: sshcontrol, started with the permissive umask 022, must still leave the
database, its WAL/SHM files and the keys unreadable to another user, and ``check``,
``serve`` and ``mcp_serve`` must say so and name the fix.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.sshd import free_port

REPO = Path(__file__).resolve().parents[2]

HOLD_DATABASE = """
import sys
from django.contrib.auth.models import User
User.objects.create_user("someone", password="x" * 20)
print("READY", flush=True)
sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def other_user() -> Iterator[str]:
    name = f"sshco{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    yield name
    subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def open_data_dir() -> Iterator[Path]:
    """A data directory every local user can enter and list, as a hand-made one often is."""
    base = Path(tempfile.mkdtemp(prefix="sshc-modes-", dir="/tmp"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    data.chmod(0o755)
    yield data
    shutil.rmtree(base, ignore_errors=True)


def env_for(data: Path) -> dict[str, str]:
    # The embedded default: no DATABASE_URL, no field keys (the key file is generated).
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data.parent),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "SSHCONTROL_DATA_DIR": str(data),
    }


def sshcontrol(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sshcontrol ARGS`` under the permissive umask 022."""
    return subprocess.run(
        [sys.executable, "-m", "sshcontrol", *args],
        env=env_for(data),
        cwd=data.parent,
        umask=0o022,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def readable_by(user: str, path: Path) -> bool:
    result = subprocess.run(["runuser", "-u", user, "--", "cat", str(path)], capture_output=True, check=False)
    return result.returncode == 0


def test_it_keeps_the_database_and_keys_private_in_a_directory_others_can_read(
    other_user: str, open_data_dir: Path
) -> None:
    data = open_data_dir
    control = data / "control.txt"
    control.write_text("readable on purpose\n")
    control.chmod(0o644)
    assert readable_by(other_user, control), "the other user must be able to reach this directory"

    first = sshcontrol(data, "hosts", "list")  # creates and migrates the database, makes the keys
    assert first.returncode != 0 and "sshcontrol.E040" in first.stderr, first.stderr
    assert f"chmod 700 {data}" in first.stderr
    # A process holding the database open, so that its WAL and SHM files exist.
    holder = subprocess.Popen(
        [sys.executable, "-m", "sshcontrol", "shell", "--no-imports", "-c", HOLD_DATABASE],
        env=env_for(data),
        cwd=data.parent,
        umask=0o022,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "READY"
        private = [
            data / n for n in ("sshcontrol.sqlite3", "sshcontrol.sqlite3-wal", "sshcontrol.sqlite3-shm")
        ]
        private += [data / "secret_key", data / "field_keys"]
        for path in private:
            assert path.exists(), path
            assert (path.stat().st_mode & 0o777) == 0o600, f"{path} is {path.stat().st_mode & 0o777:o}"
            assert not readable_by(other_user, path), f"{other_user} read {path}"
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()


def test_it_makes_a_database_left_open_by_an_earlier_version_private_and_names_the_fix(
    other_user: str, open_data_dir: Path
) -> None:
    data = open_data_dir
    sshcontrol(data, "hosts", "list")
    database = data / "sshcontrol.sqlite3"
    database.chmod(0o644)
    (data / "secret_key").chmod(0o644)
    assert readable_by(other_user, database)

    report = sshcontrol(data, "check")
    assert report.returncode != 0 and "sshcontrol.E040" in report.stderr
    assert f"the directory {data} is open to other local users (mode 0755)" in report.stderr
    assert f"the file {data / 'secret_key'} is open to other local users (mode 0644)" in report.stderr
    # The database itself was made owner-only as the process started; the key is reported.
    assert (database.stat().st_mode & 0o777) == 0o600 and not readable_by(other_user, database)
    fix = report.stderr.split("HINT: Run: ", 1)[1].splitlines()[0]
    subprocess.run(["sh", "-c", fix], check=True)
    assert not readable_by(other_user, data / "secret_key")
    fixed = sshcontrol(data, "check")
    assert fixed.returncode == 0 and "E040" not in fixed.stderr, fixed.stderr


@pytest.mark.parametrize("command", [["mcp_serve"], ["serve", "--bind"]])
def test_it_refuses_to_serve_from_a_directory_others_can_read(
    open_data_dir: Path, command: list[str]
) -> None:
    data = open_data_dir
    if command[-1] == "--bind":
        command = [*command, f"127.0.0.1:{free_port()}"]
    started = time.monotonic()
    result = sshcontrol(data, *command, "--no-create-admin")
    assert result.returncode != 0 and time.monotonic() - started < 120
    assert "sshcontrol.E040" in result.stderr and f"chmod 700 {data}" in result.stderr
    assert result.stdout == ""  # over stdio, stdout belongs to the protocol
    data.chmod(0o700)
    assert sshcontrol(data, "check").returncode == 0


def test_it_reports_a_database_in_a_directory_others_can_write(other_user: str, open_data_dir: Path) -> None:
    """A SQLite ``DATABASE_URL`` outside the data directory, in a directory every user may write.

    The other user cannot read the 0600 database, but can rename it away and put a database of
    their own (their admin account, their grants) under its name, or create its ``-wal`` or
    ``-journal`` before sshcontrol does. ``check`` used to look only at the files, not at the
    directory holding them, and passed.
    """
    data = open_data_dir
    shared = data.parent / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = {
        **env_for(data),
        "DATABASE_URL": f"sqlite:///{shared}/sshcontrol.sqlite3",
        "SSHCONTROL_FIELD_KEYS": Fernet.generate_key().decode(),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sshcontrol", *args],
            env=env,
            cwd=data.parent,
            umask=0o022,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    data.chmod(0o700)
    run("migrate", "--no-input")
    database = shared / "sshcontrol.sqlite3"
    assert database.exists() and (database.stat().st_mode & 0o777) == 0o600
    # The attack the directory allows: the other user moves the database aside.
    moved = subprocess.run(
        ["runuser", "-u", other_user, "--", "mv", str(database), str(shared / "stolen")],
        capture_output=True,
        check=False,
    )
    assert moved.returncode == 0, moved.stderr
    (shared / "stolen").rename(database)
    report = run("check")
    assert report.returncode != 0 and "sshcontrol.E040" in report.stderr, report.stderr
    assert f"the directory {shared} holding the database lets other local users" in report.stderr
    assert f"chmod 700 {shared}" in report.stderr
    subprocess.run(["chmod", "700", str(shared)], check=True)
    fixed = run("check")
    assert fixed.returncode == 0 and "E040" not in fixed.stderr, fixed.stderr
    # A directory the sshcontrol user does not own (like /tmp) cannot be fixed with chmod: move.
    shared.chmod(0o1777)
    subprocess.run(["chown", other_user, str(shared)], check=True)
    moved_hint = run("check")
    assert "sshcontrol.E040" in moved_hint.stderr and "move the database" in moved_hint.stderr, (
        moved_hint.stderr
    )
    assert f"chmod 700 {shared}" not in moved_hint.stderr
