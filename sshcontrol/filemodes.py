"""Owner-only files: the umask of every sshcontrol process, the database's files, and what is exposed.

The data directory holds the SQLite database (admin sessions, audit rows, encrypted
credentials), its ``-wal``/``-shm`` files, the secret key and the field key. A directory that
already existed with mode 0755 used to leave the database and its WAL/SHM files 0644 (SQLite
creates them with ``0644 & ~umask``, and the WAL/SHM files copy the database's mode), and
another local user read an admin session key from them. So:

- every entry point (the ``sshcontrol`` script and ``manage.py``, Celery workers, the ASGI and
  WSGI applications) sets a umask that leaves nothing to group or others;
- files sshcontrol creates itself are created with an explicit 0600 mode as well;
- the database's files are created 0600 before SQLite first opens them, and tightened to 0600
  whenever a connection is opened (a database made by an earlier version is fixed on start);
- ``sshcontrol check`` reports a data directory, or a file in it, that other users can reach,
  and ``serve``/``mcp_serve`` refuse to start until it is fixed, naming the command that fixes it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWNER_ONLY = 0o077  # the umask bits: nothing for group and others
FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def restrict_umask() -> None:
    """Keep the process's umask at least as strict as owner-only (a stricter one is kept)."""
    current = os.umask(OWNER_ONLY)
    os.umask(current | OWNER_ONLY)


def sqlite_path(database: dict[str, Any]) -> Path | None:
    """The file of a SQLite database setting, or None for another engine or an in-memory database."""
    if not str(database.get("ENGINE", "")).endswith("sqlite3"):
        return None
    name = str(database.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def sqlite_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in SQLITE_SUFFIXES]


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist (SQLite treats an empty file as a new database)."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        os.close(fd)


def tighten(path: Path) -> None:
    """Make an existing file of ours 0600; a file we do not own is left for the check to report."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & OWNER_ONLY:
        with contextlib.suppress(OSError):
            path.chmod(FILE_MODE)


def secure_sqlite(path: Path) -> None:
    """Before and after SQLite opens ``path``: the database and its side files owner-only."""
    if path.parent.is_dir():
        create_private_file(path)
    for candidate in sqlite_files(path):
        tighten(candidate)


def secure_existing_sqlite(database: dict[str, Any]) -> None:
    path = sqlite_path(database)
    if path is not None:
        for candidate in sqlite_files(path):
            tighten(candidate)


def private_sqlite_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: the files a new SQLite connection may have created, owner-only."""
    if connection.vendor == "sqlite":
        secure_existing_sqlite(connection.settings_dict)


@dataclass(frozen=True)
class Exposure:
    """A directory or file that users other than its owner can reach, and the command that fixes it."""

    path: Path
    mode: int
    is_dir: bool
    # The directory holding a database outside the data directory, where others may write.
    database_dir: bool = False
    # Owned by this user: chmod fixes it. Otherwise (``/tmp``) the database must move.
    owned: bool = True

    @property
    def fix(self) -> str:
        return f"chmod {DIR_MODE if self.is_dir else FILE_MODE:o} {shlex.quote(str(self.path))}"

    def describe(self) -> str:
        if self.database_dir:
            return (
                f"the directory {self.path} holding the database lets other local users create, "
                f"rename or delete files in it (mode {self.mode:04o})"
            )
        kind = "directory" if self.is_dir else "file"
        return f"the {kind} {self.path} is open to other local users (mode {self.mode:04o})"


def _exposure(path: Path) -> Exposure | None:
    try:
        info = path.stat()
    except OSError:
        return None
    if info.st_mode & OWNER_ONLY:
        return Exposure(path, stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode))
    return None


# Secrets sshcontrol keeps in the data directory besides the database.
SECRET_FILES = ("secret_key", "field_keys", "initial_admin_password")


def _writable_database_dir(directory: Path) -> Exposure | None:
    """The database's own directory, where others could replace it or plant its side files.

    Outside the data directory (which must be owner-only anyway), a directory others can only
    enter and list is fine: the files are 0600. One they can write, or that another user owns,
    is not: the 0600 database can be renamed away and replaced, and its ``-wal``/``-journal``
    created by them before SQLite creates it.
    """
    try:
        info = directory.stat()
    except OSError:
        return None
    owned = info.st_uid == os.geteuid()
    if info.st_mode & 0o022 or not owned:
        return Exposure(directory, stat.S_IMODE(info.st_mode), True, database_dir=True, owned=owned)
    return None


def exposed(data_dir: Path, database: Path | None) -> list[Exposure]:
    """The data directory, its secret files and the database's files, where others can reach them."""
    candidates = [data_dir] + [data_dir / name for name in SECRET_FILES]
    if database is not None:
        candidates += sqlite_files(database)
    found = [hit for hit in map(_exposure, candidates) if hit is not None]
    if database is not None and database.parent.resolve() != data_dir.resolve():
        writable = _writable_database_dir(database.parent)
        if writable is not None:
            found.insert(0, writable)
    return found


def fix_command(found: list[Exposure]) -> str:
    """What fixes every exposure found: one shell command (directories first), then any move.

    A directory of someone else's cannot be chmod-ed: the database has to move out of it.
    """
    ordered = sorted((e for e in found if e.owned), key=lambda e: not e.is_dir)
    command = "Run: " + " && ".join(e.fix for e in ordered) if ordered else ""
    moves = [
        f"move the database out of {e.path} (DATABASE_URL) to a directory only this user can write"
        for e in found
        if not e.owned
    ]
    return "; ".join(filter(None, [command, *moves]))
