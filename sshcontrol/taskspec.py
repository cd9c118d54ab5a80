"""What a call asks of the process that holds its SSH session, and what comes back.

One frozen request type per task and one reply type, used unchanged from the MCP tool
down to ``sshcontrol.tasks`` on the embedded default (no serialisation at all). Only the
Celery edge turns them into JSON and back (``sshcontrol/wire.py``); the ``Base64Bytes``
annotations say how bytes travel there and mean nothing elsewhere.

A failure is one exception, :class:`DispatchError`, whose :class:`Failure` kind a caller
can act on (re-open a stale session, label an unknown outcome ``interrupted``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import Base64Bytes

from sshlib.execute import ExecResult, ProgressFn
from sshlib.transfer import FileEntry

__all__ = [
    "CommandSpec",
    "Connected",
    "Disconnected",
    "DispatchError",
    "DownloadSpec",
    "Downloaded",
    "Executed",
    "Failure",
    "JobTicket",
    "ListSpec",
    "Listed",
    "OutputPage",
    "Owner",
    "ProgressFn",
    "ReadSpec",
    "StillRunning",
    "UploadSpec",
    "Uploaded",
]


class Failure(StrEnum):
    """Why a task did not give its reply. The values are stable: they cross the broker."""

    # The session is not held where its row says (closed, idle-expired, its holder restarted).
    SESSION_NOT_FOUND = "session_not_found"
    # The work was handed over and then its holder or the broker vanished: it may have run.
    WORKER_LOST = "worker_lost"
    OUTCOME_UNKNOWN = "outcome_unknown"
    # Nothing was sent.
    BROKER_UNREACHABLE = "broker_unreachable"
    NO_WORKER = "no_worker"
    # What the holder found.
    HOST_NOT_FOUND = "host_not_found"
    HOST_DISABLED = "host_disabled"
    # The jump host links stored for the host make a loop: no connection can follow them.
    JUMP_CHAIN = "jump_chain"
    HOST_KEY_UNKNOWN = "host_key_unknown"
    HOST_KEY_CHANGED = "host_key_changed"
    AUTHENTICATION_FAILED = "authentication_failed"
    CONNECT_FAILED = "connect_failed"
    CONNECTION_LOST = "connection_lost"
    SSH_ERROR = "ssh_error"
    REMOTE_FILE_ERROR = "remote_file_error"
    LOCAL_PATH = "local_path"
    # A transfer's byte stream between mcp_serve and the worker broke or arrived damaged.
    TRANSFER_STREAM = "transfer_stream"
    # Shared storage was configured, and the worker does not see mcp_serve's transfer directory.
    SHARED_STORAGE = "shared_storage"
    NO_CREDENTIAL = "no_credential"
    NO_SUDO_PASSWORD = "no_sudo_password"  # noqa: S105  (a failure kind, not a password)
    DATABASE_UNAVAILABLE = "database_unavailable"
    # A kept output (a job's) that this holder does not have.
    OUTPUT_NOT_FOUND = "output_not_found"
    INTERNAL_ERROR = "internal_error"

    @property
    def outcome_unknown(self) -> bool:
        """The call may have run, in part or in full: an interruption, not an error."""
        return self in (Failure.WORKER_LOST, Failure.OUTCOME_UNKNOWN)


class DispatchError(Exception):
    """A task's failure: a kind to act on and one line for the model."""

    def __init__(self, kind: Failure, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


# -- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who a new session is opened for: the audit actor and the MCP client (None for an admin)."""

    actor: str
    client_id: int | None = None


@dataclass(frozen=True)
class CommandSpec:
    """One command as the model asked for it; the tool, the policy, approvals and the runtime share it.

    ``stdin`` is the caller's text only: a sudo password is added by the process that
    decrypts it, never here.
    """

    command: str
    working_directory: str | None = None
    timeout: float = 60.0
    stdin: str | None = None
    sudo: bool = False


@dataclass(frozen=True)
class JobTicket:
    """A command that may become a background job: its handle and whose it is.

    The holder waits ``foreground`` seconds for the command (0: not at all, ``ssh_start_job``);
    a command still running then becomes the job ``job_id`` (``sshcontrol/jobs.py``) and the
    call gets :class:`StillRunning` while the command goes on where the session is held.
    """

    job_id: str
    foreground: float
    actor: str
    client_id: int | None = None
    session_id: str = ""


@dataclass(frozen=True)
class ReadSpec:
    """A page of a kept output (a job's, by its id), read where it is kept."""

    output_id: str
    stream: Literal["stdout", "stderr"]
    offset: int
    max_bytes: int
    host_id: int | None = None  # whose credentials are redacted from the page


@dataclass(frozen=True)
class UploadSpec:
    remote_path: str
    content: Base64Bytes | None = None  # inline content, or
    local_path: str | None = None  # a file below the holder's transfer directory
    mode: int | None = None
    overwrite: bool = False
    # Distributed mode: the bytes arrive on this stream from the caller (sshcontrol/filestream.py).
    stream: str | None = None


@dataclass(frozen=True)
class DownloadSpec:
    remote_path: str
    local_path: str | None = None  # None: return the content inline
    overwrite: bool = False
    max_inline_bytes: int = 1 << 20
    # Inline only: read max_inline_bytes from here (a page of a file bigger than one result carries).
    offset: int = 0
    # Distributed mode: the bytes go back on this stream to the caller (sshcontrol/filestream.py).
    stream: str | None = None


@dataclass(frozen=True)
class CopySpec:
    """``ssh_copy``: a file from the source session's host to the destination session's."""

    source_path: str
    dest_path: str
    overwrite: bool = False
    mode: int | None = None


@dataclass(frozen=True)
class ListSpec:
    remote_path: str
    show_hidden: bool = False
    max_entries: int = 1000


# -- replies --------------------------------------------------------------------------------------
# ``reconnected``: the session's link had dropped and was re-established for this call (the
# audit row records it).


@dataclass(frozen=True)
class Connected:
    session_id: str
    reused: bool
    reconnected: bool
    host_key_fingerprint: str


@dataclass(frozen=True)
class Executed:
    """A command that ran: its result, output redacted of the host's secrets."""

    run: ExecResult
    reconnected: bool = False
    # Who cancelled a cancelled run (the client, or a worker shutting down); "" otherwise.
    cancel_reason: str = ""
    # Set when the output was too large for a result and is kept where it ran, for
    # ssh_read_output (a job row binds it to the caller's client).
    output_id: str = ""


@dataclass(frozen=True)
class StillRunning:
    """The command outlived its foreground limit: it goes on as the job ``job_id``.

    ``stdout``/``stderr`` are the output so far from the start (redacted of the host's
    secrets, at most a page each), and ``*_next_offset`` where ``ssh_job_status`` goes on.
    """

    job_id: str
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    stdout_next_offset: int
    stderr_next_offset: int
    duration_ms: float
    reconnected: bool = False


@dataclass(frozen=True)
class OutputPage:
    """Bytes ``offset`` to ``next_offset`` of a kept stream, as text redacted of the host's secrets.

    ``skipped``: bytes before ``offset`` that were not kept (the middle of a huge output).
    ``complete``: the command ended and this is the end of the stream.
    ``plain``: the text needs no cleaning either (``audit.output_hygiene.is_plain``), so the
    process that shows it to a model takes it as it is.
    """

    text: str
    offset: int
    next_offset: int
    total: int
    complete: bool
    skipped: int = 0
    plain: bool = False


@dataclass(frozen=True)
class Uploaded:
    remote_path: str
    size: int
    sha256: str
    reconnected: bool = False


@dataclass(frozen=True)
class Downloaded:
    remote_path: str
    size: int
    sha256: str
    content: Base64Bytes | None  # set when downloaded inline
    reconnected: bool = False
    # Inline downloads read a page: the file's size, and where the page starts.
    file_size: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Copied:
    source_path: str
    dest_path: str
    size: int
    sha256: str  # of the bytes read from the source, checked against those written
    reconnected: bool = False  # either session's link had dropped and was re-established


@dataclass(frozen=True)
class Listed:
    path: str
    entries: list[FileEntry]
    truncated: bool
    reconnected: bool = False


@dataclass(frozen=True)
class Disconnected:
    session_id: str
    was_open: bool
