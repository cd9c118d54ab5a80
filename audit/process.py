"""Process identity: a key naming one run of one process, and whether that run still exists.

A key is ``machine:pid:start``. The start time (field 22 of ``/proc/<pid>/stat``, in
clock ticks since boot) is part of it because PIDs are reused: a different process that
later gets the same PID has a different start time, so its existence does not make a
stopped process look alive.
"""

from __future__ import annotations

import os
import socket

_cached: tuple[int, str] | None = None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None when the process does not exist.

    The command name (field 2) is in parentheses and may itself contain spaces and
    parentheses, so the line is split after its last ``)``; the returned list starts at
    field 3 (the state).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].decode("ascii", "replace").split()


def _proc_available() -> bool:
    return os.path.exists("/proc/self/stat")


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    # Field 22 is index 19 once fields 1 and 2 (pid and comm) are split off.
    return fields[19] if fields is not None and len(fields) > 19 else None


def current_process_key() -> str:
    """``machine:pid:start`` of this process; recomputed after a fork, when the PID changes."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        # Without /proc (not Linux) the start time is unknown and left empty; is_alive then
        # falls back to a bare PID check.
        start = (_start_time(pid) if _proc_available() else None) or ""
        _cached = (pid, f"{socket.gethostname()}:{pid}:{start}")
    return _cached[1]


def is_alive(key: str) -> bool | None:
    """Whether the process run named by ``key`` still exists.

    None when it cannot be told from here: the key names another machine, or is malformed.
    A zombie counts as stopped: it no longer does any work.
    """
    try:
        machine, pid_text, start = key.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if machine != socket.gethostname() or pid <= 0:
        return None
    if _proc_available():
        fields = _stat_fields(pid)
        if fields is None:
            return False
        if fields[0] in ("Z", "X"):
            return False
        return not start or (len(fields) > 19 and fields[19] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Another user's process holds the PID; it exists, which is all a bare PID check can say.
        return True
    return True
