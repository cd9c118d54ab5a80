"""The work a tool call needs done where the SSH session lives.

Each task takes ids and typed requests (``sshcontrol/taskspec.py``) and returns a typed
reply or raises ``DispatchError``. On the embedded default they run in the calling
thread with the very objects the tool built; in distributed mode ``sshcontrol/celery_tasks.py``
runs them in a Celery worker and turns the objects into JSON at that edge. They load what
they need from the database themselves: credentials never travel in a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets as pysecrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from functools import wraps
from typing import Any, BinaryIO, NoReturn, ParamSpec, TypeVar, cast

import paramiko
from django import db
from django.conf import settings
from django.utils import timezone

from audit import writelock
from audit.redaction import redact
from hosts import hostkeys
from hosts.models import Host, JumpLoop
from hosts.specs import TrustedKeys
from sshcontrol import credentials, holders, jobs, localfiles, orphans, outputs
from sshcontrol.credentials import JumpHostDisabled, NoCredential, build_spec
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.models import Job, SshSession
from sshcontrol.opening import BatchOpen, OpenedRow
from sshcontrol.taskspec import (
    CommandSpec,
    Connected,
    Copied,
    CopySpec,
    Disconnected,
    DispatchError,
    Downloaded,
    DownloadSpec,
    Executed,
    Failure,
    JobTicket,
    Listed,
    ListSpec,
    OutputPage,
    Owner,
    ProgressFn,
    ReadSpec,
    StillRunning,
    Uploaded,
    UploadSpec,
)
from sshlib import ranges, remote_copy, transfer
from sshlib.capture import OutputSink
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
from sshlib.sessions import CancelEvent, Session, registry

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_KINDS: dict[type[Exception], Failure] = {
    HostKeyUnknown: Failure.HOST_KEY_UNKNOWN,
    HostKeyChanged: Failure.HOST_KEY_CHANGED,
    AuthenticationFailed: Failure.AUTHENTICATION_FAILED,
    ConnectFailed: Failure.CONNECT_FAILED,
    ChannelFailed: Failure.CONNECTION_LOST,
    ConnectionLost: Failure.CONNECTION_LOST,
    RemoteFileError: Failure.REMOTE_FILE_ERROR,
}


def task(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a task's expected failures into ``DispatchError``; log anything unexpected."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DispatchError:
            raise
        except SshError as exc:
            raise ssh_failure(exc) from None
        except NoCredential as exc:
            raise DispatchError(Failure.NO_CREDENTIAL, str(exc)) from None
        except JumpHostDisabled as exc:
            raise DispatchError(Failure.HOST_DISABLED, str(exc)) from None
        except JumpLoop as exc:
            # Only a write that skipped Host.clean() (a raw UPDATE, a script) can store a loop.
            raise DispatchError(
                Failure.JUMP_CHAIN, f"{exc}; an administrator must correct the jump host links"
            ) from None
        except DatabaseUnavailable as exc:
            raise DispatchError(Failure.DATABASE_UNAVAILABLE, str(exc)) from None
        except Exception:
            # The traceback goes to this process's log; the caller gets no internals.
            log.exception("task %s failed unexpectedly", fn.__name__)
            raise DispatchError(Failure.INTERNAL_ERROR, "internal error; see the server log") from None

    return wrapper


# -- sessions -----------------------------------------------------------------------------------


def new_session_id(host_name: str) -> str:
    return f"{host_name}-{pysecrets.token_hex(6)}"


def _host(host_id: int) -> Host:
    try:
        return retrying(lambda: Host.objects.select_related("credential").get(pk=host_id), "reading the host")
    except Host.DoesNotExist:
        raise DispatchError(Failure.HOST_NOT_FOUND, "the host was removed") from None


def _host_key_message(host: Host, seen: SeenKey, changed: bool, target: Host | None = None) -> str:
    """The refusal's words; ``target`` is the host called when ``host`` is one of its jump hosts."""
    named = f"host '{host.name}'"
    if target is not None and target.pk != host.pk:
        named = f"jump host '{host.name}' (on the way to '{target.name}')"
    if changed:
        whose = f" of {named}" if named.startswith("jump") else ""
        return (
            f"HOST KEY CHANGED for '{host.name}': the server presented {seen.key_type} {seen.fingerprint}, "
            f"which is not the trusted key{whose}. This may be a man-in-the-middle attack; the connection "
            "was refused and the new key stored as pending. An admin must investigate before approving it "
            f"(sshcontrol hosts trust {host.name} {seen.fingerprint})."
        )
    return (
        f"{named} presented an unknown host key {seen.key_type} {seen.fingerprint}; it is stored "
        f"as pending. An admin must approve it: sshcontrol hosts trust {host.name} {seen.fingerprint} "
        "(or in the admin under Host keys)."
    )


def _host_key_refusal(target: Host, exc: HostKeyUnknown | HostKeyChanged) -> NoReturn:
    """Store the key the server presented as pending for the host that presented it, and refuse.

    That host is ``target`` or, when ``exc.host_ref`` names another one, a jump host on its way.
    """
    raise host_key_refusal(target, exc) from None


def host_key_refusal(target: Host, exc: HostKeyUnknown | HostKeyChanged) -> DispatchError:
    """``_host_key_refusal``'s error, the key stored pending (the batch engine's hosts refused alike)."""
    changed = isinstance(exc, HostKeyChanged)
    host = target if exc.host_ref in ("", str(target.pk)) else _host(int(exc.host_ref))
    hostkeys.record_seen(host, exc.seen.key_type, exc.seen.public_key, exc.seen.fingerprint)
    return DispatchError(
        Failure.HOST_KEY_CHANGED if changed else Failure.HOST_KEY_UNKNOWN,
        _host_key_message(host, exc.seen, changed, target),
    )


def ssh_failure(exc: SshError) -> DispatchError:
    """What ``task`` turns an SSH runtime failure into (for work run outside a task: the batch engine)."""
    kind = next((k for cls, k in _KINDS.items() if isinstance(exc, cls)), Failure.SSH_ERROR)
    return DispatchError(kind, str(exc))


def _connect_only(host: Host, session_id: str, trusted: Mapping[int, TrustedKeys] | None = None) -> Session:
    """Connect, verifying the host key against ``trusted`` (a batch's snapshot) or the database."""
    spec = build_spec(host, trusted)
    try:
        session = registry.open(session_id, str(host.pk), spec)
    except (HostKeyUnknown, HostKeyChanged) as exc:
        _host_key_refusal(host, exc)
    seen = session.connection.host_key
    if not spec.trusted_keys and spec.trust_on_first_use:
        hostkeys.record_seen(host, seen.key_type, seen.public_key, seen.fingerprint, trusted=True)
    return session


def _open(host: Host, session_id: str, record: Callable[[Session], object] | None = None) -> Session:
    """Connect; record the connection on the host and, with ``record``, the session row, in one commit.

    Queued on the process's write lock (``audit.writelock``) like the audit rows: a batch's
    hosts connect together, and on SQLite writers that meet in its busy handler sleep in
    growing steps instead of taking turns (1,000 hosts ran past its timeout).
    """
    session = _connect_only(host, session_id)

    def write() -> None:
        with writelock.serialized(db.connection), db.transaction.atomic():
            Host.objects.filter(pk=host.pk).update(last_connected_at=timezone.now())
            if record is not None:
                record(session)

    retrying(write, "recording the connection")
    return session


def _open_for_batch(batch: BatchOpen, owner: Owner) -> Connected:
    """A batch's new session: no query, no commit here; its row goes to ``batch.rows``.

    The host was loaded when the batch prepared it (``hosts.specs.prepare``), its host key
    is checked against the trusted keys of that snapshot, its credential decrypted here.
    """
    host = batch.prepared.host
    if not host.enabled:
        raise DispatchError(Failure.HOST_DISABLED, f"host '{host.name}' is disabled by an administrator")
    new_id = new_session_id(host.name)
    session = _connect_only(host, new_id, batch.prepared.trusted)
    fingerprint = session.connection.host_key.fingerprint
    batch.rows.add(
        OpenedRow(
            new_id,
            host.pk,
            host.name,
            holders.current_worker(),
            owner.actor,
            owner.client_id,
            fingerprint,
            timezone.now(),
        )
    )
    return Connected(new_id, reused=False, reconnected=False, host_key_fingerprint=fingerprint)


@task
def connect(
    host_id: int,
    owner: Owner,
    session_id: str | None = None,
    reopen: bool = False,
    batch: BatchOpen | None = None,
) -> Connected:
    """Open a session on the host for ``owner``, or reuse ``session_id`` when this process holds it.

    ``reopen`` re-creates a known session here after the process that held it died, so the
    caller keeps its session id (the distributed dispatcher uses it; the call is audited as
    a reconnect). ``batch``: a new session of a batch, from its prepared host (``sshcontrol.opening``).
    """
    if batch is not None and session_id is None:
        return _open_for_batch(batch, owner)
    host = _host(host_id)
    if session_id and reopen:
        session = _open(
            host,
            session_id,
            lambda opened: SshSession.objects.record_reopened(
                session_id,
                worker=holders.current_worker(),
                fingerprint=opened.connection.host_key.fingerprint,
            ),
        )
        fingerprint = session.connection.host_key.fingerprint
        return Connected(session_id, reused=True, reconnected=True, host_key_fingerprint=fingerprint)
    if session_id:
        held = registry.get(session_id)
        if held is not None and held.host_ref == str(host.pk):
            _client, reconnected = held.client(lambda: build_spec(host))
            held.touch()
            SshSession.objects.record_reused(session_id)
            return Connected(
                session_id,
                reused=True,
                reconnected=reconnected,
                host_key_fingerprint=held.connection.host_key.fingerprint,
            )
        raise DispatchError(
            Failure.SESSION_NOT_FOUND,
            f"session '{session_id}' is not open for host '{host.name}'; omit session_id to open a new one",
        )
    new_id = new_session_id(host.name)
    session = _open(
        host,
        new_id,
        lambda opened: SshSession.objects.record_opened(
            new_id,
            host_id=host.pk,
            host_name=host.name,
            worker=holders.current_worker(),
            actor=owner.actor,
            client_id=owner.client_id,
            fingerprint=opened.connection.host_key.fingerprint,
        ),
    )
    fingerprint = session.connection.host_key.fingerprint
    return Connected(new_id, reused=False, reconnected=False, host_key_fingerprint=fingerprint)


def _held(session_id: str) -> Session:
    session = registry.get(session_id)
    if session is None:
        raise DispatchError(
            Failure.SESSION_NOT_FOUND,
            f"session '{session_id}' is not open (closed, idle-expired, or its server restarted); "
            "call ssh_connect again",
        )
    return session


def _client_for(session: Session) -> tuple[paramiko.SSHClient, bool]:
    """The session's client, reconnected (the caller audits the flag) if the link dropped.

    The host row is read only to reconnect: the caller already checked that the host is
    enabled, and the hot path of a command should not pay for a second query.
    """

    def respec() -> Any:
        host = _host(int(session.host_ref))
        if not host.enabled:
            raise DispatchError(Failure.HOST_DISABLED, f"host '{host.name}' is disabled by an administrator")
        return build_spec(host)

    try:
        client, reconnected = session.client(respec)
    except (HostKeyUnknown, HostKeyChanged) as exc:
        _host_key_refusal(_host(int(session.host_ref)), exc)
    if reconnected:
        log.info("session %s reconnected", session.session_id)
    return client, reconnected


def _request(session: Session, spec: CommandSpec) -> tuple[ExecRequest, tuple[str, ...]]:
    """The command as the SSH runtime runs it, and what to redact from its output."""
    secrets = session.secrets
    stdin = spec.stdin.encode() if spec.stdin is not None else None
    if spec.sudo:
        # Decrypted here, where the connection is, and only for this run: first line of stdin.
        try:
            password = retrying(
                lambda: credentials.sudo_password(int(session.host_ref)), "reading the sudo password"
            )
        except credentials.NoSudoPassword as exc:
            raise DispatchError(Failure.NO_SUDO_PASSWORD, str(exc)) from None
        stdin = password.encode() + b"\n" + (stdin or b"")
        secrets = (*secrets, password)
    request = ExecRequest(
        command=spec.command,
        working_directory=spec.working_directory,
        timeout=spec.timeout,
        stdin=stdin,
        max_output_bytes=settings.MAX_OUTPUT_BYTES,
        sudo=spec.sudo,
    )
    return request, secrets


def _run(
    session: Session,
    request: ExecRequest,
    cancel: threading.Event,
    progress: ProgressFn | None,
    audit_event_id: int | None,
    sink: OutputSink | None = None,
) -> tuple[ExecResult, bool]:
    """Run on the session (reconnecting once if its link dropped): the result, and whether it reconnected."""
    client, reconnected = _client_for(session)
    # The remote process group is recorded, so a survivor can kill it if this process dies.
    tracker = (
        orphans.Tracker(session.session_id, int(session.host_ref), audit_event_id)
        if orphans.recording()
        else None
    )
    started = tracker.started if tracker is not None else None
    try:
        try:
            result = run_command(
                client, request, cancel=cancel, on_progress=progress, on_started=started, sink=sink
            )
        except ChannelFailed:
            # The transport died between the liveness check and the channel open: reconnect once.
            client, reconnected = _client_for(session)
            result = run_command(
                client, request, cancel=cancel, on_progress=progress, on_started=started, sink=sink
            )
    finally:
        if tracker is not None:
            tracker.done()
    return result, reconnected


@task
def execute(
    session_id: str,
    spec: CommandSpec,
    *,
    call_id: str = "",
    progress: ProgressFn | None = None,
    audit_event_id: int | None = None,
    sink: OutputSink | None = None,
) -> Executed:
    """Run ``spec`` on the held session; ``sink`` (a ``KeptOutput``) is told all of its output."""
    session = _held(session_id)
    request, secrets = _request(session, spec)
    with registry.running_call(call_id or pysecrets.token_hex(8)) as cancel:
        result, reconnected = _run(session, request, cancel, progress, audit_event_id, sink)
    session.touch(command=True)
    shown = replace(result, stdout=redact(result.stdout, secrets), stderr=redact(result.stderr, secrets))
    return Executed(shown, reconnected, cancel.reason if result.cancelled else "")


@task
def execute_job(
    session_id: str,
    spec: CommandSpec,
    ticket: JobTicket,
    *,
    progress: ProgressFn | None = None,
    audit_event_id: int | None = None,
) -> Executed | StillRunning:
    """``execute`` that waits only ``ticket.foreground`` seconds, then leaves the command running as a job.

    The command runs in a thread of its own (``sshcontrol.jobs.JobRun``, cancelled by the
    ticket's job id). Ended in time, it is an ordinary ``Executed``; still running, it
    becomes the job and the answer is ``StillRunning`` (the job completes the audit row).
    """
    session = _held(session_id)
    request, secrets = _request(session, spec)
    host_id = int(session.host_ref)
    reconnected = False

    def body(cancel: CancelEvent, sink: OutputSink, tell: ProgressFn) -> ExecResult:
        nonlocal reconnected
        result, reconnected = _run(session, request, cancel, tell, audit_event_id, sink)
        return result

    context = jobs.JobContext(
        ticket=replace(ticket, session_id=session_id),
        spec=spec,
        host_id=host_id,
        # Known from the session's opening: one query less on every ssh_execute.
        host_name=session.host_name or _host_name(host_id),
        session_id=session_id,
        audit_event_id=audit_event_id,
        secrets=secrets,
    )
    run = jobs.JobRun(context, body, progress).start()
    if not run.wait(ticket.foreground):
        still = run.become_job()
        return replace(still, reconnected=reconnected)
    result = run.outcome()
    session.touch(command=True)
    shown = replace(result, stdout=redact(result.stdout, secrets), stderr=redact(result.stderr, secrets))
    cancel_reason = run.cancel.reason if run.cancel is not None and result.cancelled else ""
    output_id = jobs.keep_for_paging(context, result) if run.kept.spilled else ""
    return Executed(shown, reconnected, cancel_reason, output_id)


def _host_name(host_id: int) -> str:
    name = retrying(
        lambda: Host.objects.filter(pk=host_id).values_list("name", flat=True).first(), "reading the host"
    )
    return name or ""


# A model pages through a large output in many calls: the host's secrets (decrypted for the
# redaction of each page) are looked up once per output and this many seconds, not per page,
# which cost more than the page itself (several queries and a decryption).
_SECRETS_SECONDS = 30.0
_page_secrets: dict[str, tuple[float, tuple[str, ...]]] = {}
_page_secrets_lock = threading.Lock()


def _secrets_for_page(spec: ReadSpec) -> tuple[str, ...]:
    host_id = spec.host_id
    if host_id is None:
        return ()
    now = time.monotonic()
    with _page_secrets_lock:
        for output_id in [k for k, (at, _) in _page_secrets.items() if now - at > _SECRETS_SECONDS]:
            del _page_secrets[output_id]
        if (known := _page_secrets.get(spec.output_id)) is not None:
            return known[1]
    secrets: tuple[str, ...] = ()
    host = retrying(
        lambda: Host.objects.select_related("credential").filter(pk=host_id).first(), "reading the host"
    )
    if host is not None:
        with contextlib.suppress(NoCredential, JumpHostDisabled, JumpLoop):
            secrets = build_spec(host).secrets
    with _page_secrets_lock:
        _page_secrets[spec.output_id] = (now, secrets)
    return secrets


@task
def read_output(spec: ReadSpec) -> OutputPage:
    """A page of an output kept by this process (a job's), redacted of its host's secrets."""
    secrets = _secrets_for_page(spec)
    try:
        return jobs.page(spec.output_id, spec.stream, spec.offset, spec.max_bytes, secrets)
    except outputs.OutputNotFound:
        raise DispatchError(Failure.OUTPUT_NOT_FOUND, "the output is not kept here (any more)") from None


def run_detached_job(job_id: str, stdin: str | None) -> None:
    """The embedded default's job runner (``sshcontrol/jobrunner.py``): connect, run, finish, close.

    Its own connection to the job's host (credentials decrypted here, the pinned host key
    verified), in its own process, so the job outlives the ``mcp_serve`` that started it.
    """
    job = retrying(lambda: Job.objects.get(job_id=job_id), "reading the job")
    spec = CommandSpec(job.command, job.working_directory or None, job.timeout, stdin, job.sudo)
    ticket = JobTicket(job_id, 0.0, job.actor, job.client_id, job.session_id)
    context = jobs.JobContext(ticket, spec, job.host_id, job.host_name, "", job.audit_event_id, ())
    try:
        session = _connect_for_job(job.host_id, job_id)
        request, secrets = _request(session, spec)
    except DispatchError as exc:
        jobs.finish_job(context, None, exc, "")
        return
    try:
        # Claimed once connected: ssh_start_job waits for this (or for a failure to connect).
        jobs.claim(job_id, job.audit_event_id)

        def body(cancel: CancelEvent, sink: OutputSink, tell: ProgressFn) -> ExecResult:
            return _run(session, request, cancel, None, job.audit_event_id, sink)[0]

        jobs.JobRun(replace(context, secrets=secrets), body).run_as_job()
    finally:
        registry.close(job_id)


@task
def _connect_for_job(host_id: int | None, job_id: str) -> Session:
    """A connection of the runner's own (failures as ``DispatchError``, like any task's)."""
    if host_id is None:
        raise DispatchError(Failure.HOST_NOT_FOUND, "the host was removed")
    host = _host(host_id)
    if not host.enabled:
        raise DispatchError(Failure.HOST_DISABLED, f"host '{host.name}' is disabled by an administrator")
    return _open(host, job_id)


@contextlib.contextmanager
def _local_fence() -> Iterator[None]:
    try:
        yield
    except localfiles.LocalPathError as exc:
        raise DispatchError(Failure.LOCAL_PATH, str(exc)) from None


@task
def upload(session_id: str, spec: UploadSpec) -> Uploaded:
    session = _held(session_id)
    client, reconnected = _client_for(session)
    try:
        result = _send(client, spec)
    except SshError as exc:
        if exc.leftover:  # the connection went away mid-upload: the temporary file is still there
            _remove_leftover(session, exc.leftover)
        raise
    session.touch()
    return Uploaded(result.remote_path, result.size, result.sha256, reconnected)


def _send(client: paramiko.SSHClient, spec: UploadSpec) -> transfer.UploadResult:
    """``upload``'s transfer, from wherever its bytes are."""
    with _local_fence():
        if spec.stream is not None:
            # Distributed: the bytes come from the caller's machine (sshcontrol/transfer_relay.py).
            with _stream_errors():
                from sshcontrol import filestream

                with filestream.receiving(spec.stream) as incoming:
                    return transfer.upload(
                        client,
                        spec.remote_path,
                        cast(BinaryIO, incoming),
                        mode=spec.mode,
                        overwrite=spec.overwrite,
                        # The stream hashes what it hands out (it checks it against the
                        # sender's before the end): not hashed a second time.
                        source_sha256=lambda: incoming.sha256,
                    )
        if spec.local_path is None:
            return transfer.upload(
                client, spec.remote_path, spec.content or b"", mode=spec.mode, overwrite=spec.overwrite
            )
        # Opened here, below this process's own root: the embedded default, or a worker
        # that shares the caller's transfer directory (SSHCONTROL_TRANSFER_SHARED, checked
        # by the caller with a probe file first). The open file is what is sent.
        with localfiles.open_source(spec.local_path) as source:
            return transfer.upload(client, spec.remote_path, source, mode=spec.mode, overwrite=spec.overwrite)


@task
def download(session_id: str, spec: DownloadSpec) -> Downloaded:
    session = _held(session_id)
    client, reconnected = _client_for(session)
    if spec.stream is not None:
        # Distributed, to a local path: written on the caller's machine (sshcontrol/transfer_relay.py).
        with _local_fence(), _stream_errors():
            from sshcontrol import filestream

            with filestream.sending(spec.stream) as outgoing:
                result = transfer.download(client, spec.remote_path, outgoing)
                outgoing.finish(result.size, result.sha256)
        session.touch()
        return Downloaded(result.remote_path, result.size, result.sha256, None, reconnected)
    if spec.local_path is None:
        # Inline: one page (the whole file when it fits), read by range (sshlib.ranges).
        page = ranges.read_range(client, spec.remote_path, spec.offset, spec.max_inline_bytes)
        session.touch()
        digest = hashlib.sha256(page.data).hexdigest()
        return Downloaded(
            page.remote_path,
            len(page.data),
            digest,
            page.data,
            reconnected,
            file_size=page.file_size,
            offset=page.offset,
        )
    with _local_fence(), localfiles.Destination(spec.local_path, spec.overwrite) as dest:
        result = transfer.download(client, spec.remote_path, dest, max_inline_bytes=spec.max_inline_bytes)
    session.touch()
    return Downloaded(result.remote_path, result.size, result.sha256, result.content, reconnected)


@task
def copy(session_id: str, dest_session_id: str, spec: CopySpec) -> Copied:
    """``ssh_copy`` between two sessions held by this process: SFTP read streamed into SFTP write.

    The embedded default, and a worker that holds both ends (``celery_dispatch`` sends the
    copy there as one task rather than through the broker).
    """
    source = _held(session_id)
    dest = _held(dest_session_id)
    source_client, source_reconnected = _client_for(source)
    dest_client, dest_reconnected = _client_for(dest)
    try:
        result = remote_copy.copy(
            source_client,
            spec.source_path,
            dest_client,
            spec.dest_path,
            overwrite=spec.overwrite,
            mode=spec.mode,
        )
    except SshError as exc:
        if exc.leftover:
            _remove_leftover(dest, exc.leftover)
        raise
    source.touch()
    dest.touch()
    return Copied(
        result.source_path,
        result.dest_path,
        result.size,
        result.sha256,
        source_reconnected or dest_reconnected,
    )


def _remove_leftover(session: Session, path: str) -> None:
    """Remove the temporary file an upload or a copy left when its connection went away.

    Reconnects the session if need be (the transfer fails all the same; the next call finds the
    session up). Best effort: a host still away keeps the file, named ``.<name>.sshc-*.tmp``.
    """
    # The transfer's connection broke (else it would have removed the file itself), but paramiko
    # may not have noticed yet: an SFTP channel on it then fails with EOFError (seen in a full
    # run). Closed first, so _client_for reconnects.
    with contextlib.suppress(Exception):
        session.connection.client.close()
    try:
        client, _reconnected = _client_for(session)
        transfer.remove_file(client, path)
    except (SshError, DispatchError, OSError, paramiko.SSHException, EOFError) as exc:
        log.warning("could not remove the temporary file %s after a failed transfer: %s", path, exc)


@contextlib.contextmanager
def _stream_errors() -> Iterator[None]:
    from sshcontrol.filestream import StreamBroken

    try:
        yield
    except StreamBroken as exc:
        raise DispatchError(Failure.TRANSFER_STREAM, str(exc)) from None


@task
def read_probe(name: str) -> str:
    """SHA-256 of the probe file ``name`` in this transfer directory (sshcontrol/shared_storage.py)."""
    with _local_fence(), localfiles.open_source(name) as probe:
        return hashlib.sha256(probe.read(1 << 16)).hexdigest()


@task
def list_files(session_id: str, spec: ListSpec) -> Listed:
    session = _held(session_id)
    client, reconnected = _client_for(session)
    result = transfer.list_dir(
        client, spec.remote_path, show_hidden=spec.show_hidden, max_entries=spec.max_entries
    )
    session.touch()
    return Listed(result.path, result.entries, result.truncated, reconnected)


@task
def disconnect(session_id: str, reason: str = "closed by the client") -> Disconnected:
    closed = registry.close(session_id)
    retrying(
        lambda: SshSession.objects.filter(session_id=session_id).close(reason), "recording the closed session"
    )
    return Disconnected(session_id, closed)


@task
def probe(session_ids: list[str]) -> dict[str, bool | None]:
    """Liveness of the given sessions held here: True / False, or None when not held by this process."""
    states: dict[str, bool | None] = {}
    for session_id in session_ids:
        session = registry.get(session_id)
        states[session_id] = None if session is None else session.probe()
    return states


def cancel(call_id: str) -> bool:
    """Stop a running ``execute`` call (kills the remote process group)."""
    return registry.cancel(call_id)
