"""Shared storage for the transfer directory, checked rather than assumed.

With ``SSHCONTROL_TRANSFER_SHARED=1`` a worker opens a call's local path itself, below its
own ``SSHCONTROL_LOCAL_ROOT``, instead of receiving the bytes over the broker. That is right
only if the worker sees the very directory ``mcp_serve`` sees (an NFS mount at the same
place, one machine). So before the first such transfer to a worker, and again every few
minutes, ``mcp_serve`` writes a probe file with random content in its transfer directory
and asks the worker for the SHA-256 of the file of that name in its own: a different
answer (or none) refuses the transfer with a clear message instead of reading or writing
the wrong file. ``sshcontrol check --deploy`` runs the same probe against every live
worker (check ``sshcontrol.E085``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable

from sshcontrol import localfiles
from sshcontrol.taskspec import DispatchError, Failure

# A worker's good answer is trusted this long before it is asked again (a mount can go away).
VERIFIED_SECONDS = 300.0

_verified: dict[str, float] = {}
_lock = threading.Lock()


def probe(node: str, ask: Callable[[str], str]) -> str:
    """ "" when ``node`` sees this process's transfer directory, else why not.

    ``ask(name)`` has the worker read the file ``name`` below its transfer directory and
    return its SHA-256 (raising ``DispatchError`` when it cannot).
    """
    content = secrets.token_bytes(32)
    name = f".sshcontrol-probe-{secrets.token_hex(8)}"
    dest = localfiles.Destination(name, overwrite=False)
    try:
        with dest.writer() as out:
            out.write(content)
        try:
            seen = ask(name)
        except DispatchError as exc:
            seen, reason = "", exc.message
        else:
            reason = "it read a different file of that name"
    finally:
        with contextlib.suppress(OSError):
            if dest.dir_fd >= 0:
                os.unlink(name, dir_fd=dest.dir_fd)
        dest.close()
    if seen == hashlib.sha256(content).hexdigest():
        return ""
    return (
        f"SSHCONTROL_TRANSFER_SHARED is set, but worker {node} does not see this process's transfer "
        f"directory {localfiles.local_root()} (probe file {name}: {reason}); mount the same directory "
        "at the same SSHCONTROL_LOCAL_ROOT on both, or unset SSHCONTROL_TRANSFER_SHARED to stream "
        "transfers through the broker"
    )


def require(node: str, ask: Callable[[str], str]) -> None:
    """Refuse a shared-storage transfer to ``node`` unless its probe passed recently."""
    with _lock:
        if time.monotonic() - _verified.get(node, float("-inf")) < VERIFIED_SECONDS:
            return
    problem = probe(node, ask)
    if problem:
        raise DispatchError(Failure.SHARED_STORAGE, problem)
    with _lock:
        _verified[node] = time.monotonic()


def forget() -> None:
    """Drop every remembered answer (tests; a changed mount)."""
    with _lock:
        _verified.clear()
