"""The work of ``ssh_copy`` where both sessions live: host to host, without a local file.

On the embedded default both sessions are held by this process, and the copy runs in the
calling thread (``sshlib/remote_copy.py``: SFTP read streamed into an SFTP write, bounded
memory, SHA-256 of the bytes). Distributed mode would run it as one task on the worker
holding the source session; that is not built yet, and ``run`` says so instead of copying
through the wrong process.
"""

from __future__ import annotations

from dataclasses import dataclass

from sshcontrol import tasks
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.taskspec import DispatchError, Failure
from sshlib import remote_copy


@dataclass(frozen=True)
class CopySpec:
    source_path: str
    dest_path: str
    overwrite: bool = False
    mode: int | None = None


@dataclass(frozen=True)
class Copied:
    source_path: str
    dest_path: str
    size: int
    sha256: str
    reconnected: bool = False  # either session's link had dropped and was re-established


UNAVAILABLE = "ssh_copy is not available in distributed mode yet (only on the embedded default)"


def available() -> bool:
    """Whether copies can run here: checked before any session is opened for one."""
    return get_dispatcher().embedded


def run(source_session_id: str, dest_session_id: str, spec: CopySpec) -> Copied:
    """Copy between two sessions held where this runs; ``DispatchError`` for a failure."""
    if not available():
        raise DispatchError(Failure.INTERNAL_ERROR, UNAVAILABLE)
    return copy(source_session_id, dest_session_id, spec)


@tasks.task
def copy(source_session_id: str, dest_session_id: str, spec: CopySpec) -> Copied:
    source = tasks._held(source_session_id)
    dest = tasks._held(dest_session_id)
    source_client, source_reconnected = tasks._client_for(source)
    dest_client, dest_reconnected = tasks._client_for(dest)
    result = remote_copy.copy(
        source_client, spec.source_path, dest_client, spec.dest_path, overwrite=spec.overwrite, mode=spec.mode
    )
    source.touch()
    dest.touch()
    return Copied(
        result.source_path,
        result.dest_path,
        result.size,
        result.sha256,
        source_reconnected or dest_reconnected,
    )
