"""The work a tool call needs done where the SSH session lives.

Each task takes ids and plain values and returns a JSON-safe envelope
(``{"ok": True, "result": {...}}`` or ``{"ok": False, "kind": ..., "message": ...}``), so the
same functions run in-process on the embedded default and as Celery tasks on workers.
They load what they need from the database themselves: credentials never travel in a
message.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets as pysecrets
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import wraps
from typing import Any, ParamSpec

from django.conf import settings
from django.utils import timezone

from audit.redaction import redact
from hosts import hostkeys
from hosts.models import Host
from sshcontrol import credentials, holders, localfiles, orphans
from sshcontrol.credentials import NoCredential, build_spec
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.models import SshSession
from sshlib import transfer
from sshlib.errors import (
    AuthenticationFailed,
    ChannelFailed,
    ConnectFailed,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    RemoteFileError,
    SeenKey,
    SshError,
)
from sshlib.execute import ExecRequest, ExecResult, run_command
from sshlib.sessions import Session, registry

log = logging.getLogger(__name__)

Envelope = dict[str, Any]
ProgressFn = Callable[[int, int], None]
P = ParamSpec("P")


class TaskFailure(Exception):
    """A failure to report to the caller as ``kind`` + one-line ``message``."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


_KINDS: dict[type[Exception], str] = {
    HostKeyUnknown: "host_key_unknown",
    HostKeyChanged: "host_key_changed",
    AuthenticationFailed: "authentication_failed",
    ConnectFailed: "connect_failed",
    ChannelFailed: "connection_lost",
    ConnectionLost: "connection_lost",
    RemoteFileError: "remote_file_error",
    NoCredential: "no_credential",
}


def envelope(fn: Callable[P, dict[str, Any]]) -> Callable[P, Envelope]:
    """Turn a task's result or expected failure into the JSON envelope; log anything unexpected."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Envelope:
        try:
            return {"ok": True, "result": fn(*args, **kwargs)}
        except TaskFailure as exc:
            return {"ok": False, "kind": exc.kind, "message": str(exc)}
        except SshError as exc:
            kind = next((k for cls, k in _KINDS.items() if isinstance(exc, cls)), "ssh_error")
            return {"ok": False, "kind": kind, "message": str(exc)}
        except NoCredential as exc:
            return {"ok": False, "kind": "no_credential", "message": str(exc)}
        except DatabaseUnavailable as exc:
            return {"ok": False, "kind": "database_unavailable", "message": str(exc)}
        except Exception:
            # The traceback goes to this process's log; the caller gets no internals.
            log.exception("task %s failed unexpectedly", fn.__name__)
            return {"ok": False, "kind": "internal_error", "message": "internal error; see the server log"}

    return wrapper


# -- sessions -----------------------------------------------------------------------------------


def new_session_id(host_name: str) -> str:
    return f"{host_name}-{pysecrets.token_hex(6)}"


def _host(host_id: int) -> Host:
    try:
        return retrying(lambda: Host.objects.select_related("credential").get(pk=host_id), "reading the host")
    except Host.DoesNotExist:
        raise TaskFailure("host_not_found", "the host was removed") from None


def _host_key_message(host: Host, seen: SeenKey, changed: bool) -> str:
    if changed:
        return (
            f"HOST KEY CHANGED for '{host.name}': the server presented {seen.key_type} {seen.fingerprint}, "
            "which is not the trusted key. This may be a man-in-the-middle attack; the connection was "
            "refused and the new key stored as pending. An admin must investigate before approving it "
            f"(sshcontrol hosts trust {host.name} {seen.fingerprint})."
        )
    return (
        f"host '{host.name}' presented an unknown host key {seen.key_type} {seen.fingerprint}; it is stored "
        f"as pending. An admin must approve it: sshcontrol hosts trust {host.name} {seen.fingerprint} "
        "(or in the admin under Host keys)."
    )


def _open(host: Host, session_id: str) -> Session:
    spec = build_spec(host)
    try:
        session = registry.open(session_id, str(host.pk), spec)
    except (HostKeyUnknown, HostKeyChanged) as exc:
        changed = isinstance(exc, HostKeyChanged)
        hostkeys.record_seen(host, exc.seen.key_type, exc.seen.public_key, exc.seen.fingerprint)
        raise TaskFailure(
            "host_key_changed" if changed else "host_key_unknown", _host_key_message(host, exc.seen, changed)
        ) from None
    seen = session.connection.host_key
    if not spec.trusted_keys and spec.trust_on_first_use:
        hostkeys.record_seen(host, seen.key_type, seen.public_key, seen.fingerprint, trusted=True)
    retrying(
        lambda: Host.objects.filter(pk=host.pk).update(last_connected_at=timezone.now()),
        "recording the connection",
    )
    return session


@envelope
def connect(
    host_id: int,
    actor: str,
    session_id: str | None = None,
    reopen: bool = False,
    client_id: int | None = None,
) -> dict[str, Any]:
    """Open a session on the host, or reuse ``session_id`` when this process holds it for that host.

    ``client_id`` is the MCP client that will own a new session (None for the admin's own tests).

    ``reopen`` re-creates a known session here after the process that held it died, so the
    caller keeps its session id (the distributed dispatcher uses it; the call is audited as
    a reconnect).
    """
    host = _host(host_id)
    if session_id and reopen:
        session = _open(host, session_id)
        retrying(
            lambda: SshSession.objects.filter(session_id=session_id).update(
                worker=holders.current_worker(),
                state=SshSession.State.CONNECTED,
                closed_at=None,
                close_reason="",
                last_used_at=timezone.now(),
                host_key_fingerprint=session.connection.host_key.fingerprint,
            ),
            "recording the re-opened session",
        )
        return {
            "session_id": session_id,
            "reused": True,
            "reconnected": True,
            "host_key_fingerprint": session.connection.host_key.fingerprint,
        }
    if session_id:
        held = registry.get(session_id)
        if held is not None and held.host_ref == str(host.pk):
            _client, reconnected = held.client(lambda: build_spec(host))
            held.touch()
            SshSession.objects.filter(session_id=session_id).update(
                last_used_at=timezone.now(), state=SshSession.State.CONNECTED
            )
            return {
                "session_id": session_id,
                "reused": True,
                "reconnected": reconnected,
                "host_key_fingerprint": held.connection.host_key.fingerprint,
            }
        raise TaskFailure(
            "session_not_found",
            f"session '{session_id}' is not open for host '{host.name}'; omit session_id to open a new one",
        )
    new_id = new_session_id(host.name)
    session = _open(host, new_id)
    # A retried INSERT whose first reply was lost must not insert the session twice.
    retrying(
        lambda: SshSession.objects.get_or_create(
            session_id=new_id,
            defaults={
                "host": host,
                "host_name": host.name,
                "worker": holders.current_worker(),
                "opened_by": actor,
                "client_id": client_id,
                "host_key_fingerprint": session.connection.host_key.fingerprint,
            },
        ),
        "recording the new session",
    )
    session_id = new_id
    return {
        "session_id": session_id,
        "reused": False,
        "reconnected": False,
        "host_key_fingerprint": session.connection.host_key.fingerprint,
    }


def _held(session_id: str) -> Session:
    session = registry.get(session_id)
    if session is None:
        raise TaskFailure(
            "session_not_found",
            f"session '{session_id}' is not open (closed, idle-expired, or its server restarted); "
            "call ssh_connect again",
        )
    return session


def _client_for(session: Session) -> tuple[Any, bool]:
    """The session's client, reconnected (the caller audits the flag) if the link dropped.

    The host row is read only to reconnect: the caller already checked that the host is
    enabled, and the hot path of a command should not pay for a second query.
    """

    def respec() -> Any:
        host = _host(int(session.host_ref))
        if not host.enabled:
            raise TaskFailure("host_disabled", f"host '{host.name}' is disabled by an administrator")
        return build_spec(host)

    try:
        client, reconnected = session.client(respec)
    except (HostKeyUnknown, HostKeyChanged) as exc:
        host = _host(int(session.host_ref))
        changed = isinstance(exc, HostKeyChanged)
        hostkeys.record_seen(host, exc.seen.key_type, exc.seen.public_key, exc.seen.fingerprint)
        raise TaskFailure(
            "host_key_changed" if changed else "host_key_unknown", _host_key_message(host, exc.seen, changed)
        ) from None
    if reconnected:
        log.info("session %s reconnected", session.session_id)
    return client, reconnected


@envelope
def execute(
    session_id: str,
    command: str,
    working_directory: str | None = None,
    timeout: float = 60.0,
    stdin_b64: str | None = None,
    call_id: str = "",
    progress: ProgressFn | None = None,
    sudo: bool = False,
    audit_event_id: int | None = None,
) -> dict[str, Any]:
    session = _held(session_id)
    secrets = session.secrets
    stdin = base64.b64decode(stdin_b64) if stdin_b64 is not None else None
    if sudo:
        # Decrypted here, where the connection is, and only for this run: first line of stdin.
        try:
            password = retrying(
                lambda: credentials.sudo_password(int(session.host_ref)), "reading the sudo password"
            )
        except credentials.NoSudoPassword as exc:
            raise TaskFailure("no_sudo_password", str(exc)) from None
        stdin = password.encode() + b"\n" + (stdin or b"")
        secrets = (*secrets, password)
    client, reconnected = _client_for(session)
    request = ExecRequest(
        command=command,
        working_directory=working_directory,
        timeout=timeout,
        stdin=stdin,
        max_output_bytes=settings.MAX_OUTPUT_BYTES,
        sudo=sudo,
    )
    # A worker records the remote process group, so a survivor can kill it if this worker dies.
    tracker = (
        orphans.Tracker(session_id, int(session.host_ref), audit_event_id) if orphans.recording() else None
    )
    started = tracker.started if tracker is not None else None
    with registry.running_call(call_id or pysecrets.token_hex(8)) as cancel:
        try:
            result: ExecResult = run_command(
                client, request, cancel=cancel, on_progress=progress, on_started=started
            )
        except ChannelFailed:
            # The transport died between the liveness check and the channel open: reconnect once.
            client, reconnected = _client_for(session)
            result = run_command(client, request, cancel=cancel, on_progress=progress, on_started=started)
        finally:
            if tracker is not None:
                tracker.done()
    session.touch(command=True)
    out = asdict(result)
    out["stdout"] = redact(result.stdout, secrets)
    out["stderr"] = redact(result.stderr, secrets)
    out["reconnected"] = reconnected
    out["cancel_reason"] = cancel.reason if result.cancelled else ""
    return out


@contextlib.contextmanager
def _local_fence() -> Iterator[None]:
    try:
        yield
    except localfiles.LocalPathError as exc:
        raise TaskFailure("local_path", str(exc)) from None


@envelope
def upload(
    session_id: str,
    remote_path: str,
    content_b64: str | None = None,
    local_path: str | None = None,
    mode: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    session = _held(session_id)
    client, reconnected = _client_for(session)
    with _local_fence():
        if local_path is None:
            result = transfer.upload(
                client, remote_path, base64.b64decode(content_b64 or ""), mode=mode, overwrite=overwrite
            )
        else:
            # Opened here, where the bytes are read (a worker in distributed mode), below this
            # process's own root; the open file is what is sent.
            with localfiles.open_source(local_path) as source:
                result = transfer.upload(client, remote_path, source, mode=mode, overwrite=overwrite)
    session.touch()
    return {**asdict(result), "reconnected": reconnected}


@envelope
def download(
    session_id: str,
    remote_path: str,
    local_path: str | None = None,
    overwrite: bool = False,
    max_inline_bytes: int = 1 << 20,
) -> dict[str, Any]:
    session = _held(session_id)
    client, reconnected = _client_for(session)
    with _local_fence():
        if local_path is None:
            result = transfer.download(client, remote_path, None, max_inline_bytes=max_inline_bytes)
        else:
            with localfiles.Destination(local_path, overwrite) as dest:
                result = transfer.download(client, remote_path, dest, max_inline_bytes=max_inline_bytes)
    session.touch()
    out = asdict(result)
    out["content"] = base64.b64encode(result.content).decode() if result.content is not None else None
    out["reconnected"] = reconnected
    return out


@envelope
def list_files(
    session_id: str, remote_path: str, show_hidden: bool = False, max_entries: int = 1000
) -> dict[str, Any]:
    session = _held(session_id)
    client, reconnected = _client_for(session)
    result = transfer.list_dir(client, remote_path, show_hidden=show_hidden, max_entries=max_entries)
    session.touch()
    return {**asdict(result), "reconnected": reconnected}


@envelope
def disconnect(session_id: str, reason: str = "closed by the client") -> dict[str, Any]:
    closed = registry.close(session_id)
    retrying(
        lambda: (
            SshSession.objects.filter(session_id=session_id)
            .exclude(state=SshSession.State.CLOSED)
            .update(state=SshSession.State.CLOSED, closed_at=timezone.now(), close_reason=reason)
        ),
        "recording the closed session",
    )
    return {"session_id": session_id, "was_open": closed}


@envelope
def probe(session_ids: list[str]) -> dict[str, Any]:
    """Liveness of the given sessions held here: True / False, or None when not held by this process."""
    states: dict[str, bool | None] = {}
    for session_id in session_ids:
        session = registry.get(session_id)
        states[session_id] = None if session is None else session.probe()
    return {"alive": states}


def cancel(call_id: str) -> bool:
    """Stop a running ``execute`` call (kills the remote process group)."""
    return registry.cancel(call_id)


# -- Celery ---------------------------------------------------------------------------------------
# The same functions as Celery tasks, for workers in distributed mode. Names are stable
# strings so a sender never needs to import this module's objects.

from sshcontrol.celery import app  # noqa: E402  (the app imports this module lazily)

for _fn in (connect, upload, download, list_files, disconnect, probe):
    app.task(name=f"sshcontrol.{_fn.__name__}")(_fn)


@app.task(name="sshcontrol.execute", bind=True)
def execute_task(self: Any, **kwargs: Any) -> Envelope:
    """``execute`` with progress published through the result backend (state PROGRESS)."""

    def progress(out_bytes: int, err_bytes: int) -> None:
        self.update_state(state="PROGRESS", meta={"stdout_bytes": out_bytes, "stderr_bytes": err_bytes})

    return execute(**kwargs, progress=progress)
