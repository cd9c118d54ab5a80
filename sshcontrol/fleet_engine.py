"""``ssh_execute_many``'s hosts on the libssh2 batch engine (``sshlib.c_batch``), embedded only.

With ``SSHCONTROL_BATCH_ENGINE_LIBSSH2`` on, ``fleet.Batch.run_chunk`` hands the hosts of an
embedded batch that have no jump host and no trust-on-first-use to ``run`` here, and the
others to the per-host paramiko path as before. Each host's audit row is already open (write
before act); ``run`` yields each host's outcome and its row's completion as it ends, and the
batch completes the rows in groups, counts failures and reports progress as for the others.

What stays as on the paramiko path: the hosts and their trusted keys are read when the chunk
starts (``hosts.specs.prepare``; a key changed or revoked before refuses the host), the
credential (and a sudo password) is decrypted here, where the connection is made, and only
for it (the spec built with it is kept while its pooled connection lives and the host's
``spec_source`` is unchanged: ``_Specs``); a refused host key is stored pending and the row
says what ``ssh_execute`` would (``tasks.host_key_refusal``); the output is redacted of the
host's secrets; each running command's process group is recorded (``orphans.Tracker``) so a
survivor can kill it; the batch's cancellation kills the remote process groups.

What differs: the engine's connections are not sessions. No ``SshSession`` row is written,
the result and the row carry no session id, and ``ssh_execute`` cannot reuse them; they are
pooled per (client, host) and reused by the next batch of that client while the host's spec
(address, credential, trusted keys) is unchanged: any change opens a new connection.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from audit.redaction import redact
from audit.writer import Completion
from hosts.models import Host
from hosts.specs import PreparedHost, build_spec, spec_source
from sshcontrol import credentials, orphans, tasks
from sshcontrol.dbretry import retrying
from sshcontrol.hostcall import ran_outcome
from sshcontrol.taskspec import CommandSpec, DispatchError, Failure
from sshlib import c_batch
from sshlib.c_batch import Job
from sshlib.connect import ConnectSpec
from sshlib.errors import HostKeyChanged, HostKeyUnknown, SeenKey, SshError
from sshlib.execute import ExecRequest, ExecResult

Status = AuditEvent.Status


def enabled() -> bool:
    return bool(settings.BATCH_ENGINE_LIBSSH2)


def eligible(host: Host) -> bool:
    """The engine connects directly and never trusts a key on first use."""
    return host.jump_host_id is None and not host.trust_on_first_use


@dataclass(frozen=True)
class EngineHost:
    """One host of the chunk: its open audit row and what the row opened with."""

    event_id: int
    host_id: int
    details: dict[str, Any]


@dataclass(frozen=True)
class Ended:
    """One host's outcome: the fields of its ``HostResult`` and its row's completion."""

    index: int
    status: str  # a fleet HostStatus
    run: ExecResult | None
    error: str
    completion: Completion


@dataclass
class _Prepared:
    index: int
    host: EngineHost
    secrets: tuple[str, ...]
    tracker: orphans.Tracker | None = None
    fingerprint: str = ""  # the host key its connection was verified with
    connected_now: bool = False  # that connection was opened for this batch

    def connected(self, key: SeenKey, fresh: bool) -> None:
        self.fingerprint, self.connected_now = key.fingerprint, fresh


def run(
    owner: str,
    hosts: Sequence[EngineHost],
    prepared: dict[int, PreparedHost],
    spec: CommandSpec,
    cancel: Any,
    batch_id: str,
    idle: float | None = None,
) -> Iterator[Ended | None]:
    """Run ``spec`` on ``hosts`` at once on the engine; each host's ``Ended`` as it ends.

    ``owner`` names the caller (its connections are its own); ``cancel``, the batch's event.
    None is yielded after every ``idle`` seconds in which no host ended.
    """
    jobs: list[Job] = []
    kept: list[tuple[PoolKey, Source, ConnectSpec]] = []
    waiting: list[_Prepared] = []
    shared = None if spec.sudo else _request(spec, None)  # the same for every host
    recording = orphans.recording()
    for index, host in enumerate(hosts):
        try:
            ready = prepared.get(host.host_id)
            if ready is None:
                raise DispatchError(Failure.HOST_NOT_FOUND, "the host was removed")
            key, source, connect, request, secrets = _job(owner, ready, spec, shared)
        except DispatchError as exc:
            yield _failed(index, host, exc)
            continue
        item = _Prepared(index, host, secrets)
        if recording:
            # behind: the engine reports every host's start to this one thread, which would
            # otherwise write the rows one at a time, each host's result waiting behind them.
            item.tracker = orphans.Tracker(f"{batch_id}-engine", host.host_id, host.event_id, behind=True)
        started = item.tracker.started if item.tracker is not None else None
        jobs.append(Job(key, connect, request, cancel, on_started=started, on_connection=item.connected))
        kept.append((key, source, connect))
        waiting.append(item)
    if not jobs:
        return
    engine = c_batch.engine()
    engine.idle_timeout = float(settings.SESSION_IDLE_TIMEOUT)  # as an unused session's
    specs.keep(engine, kept)
    for event in engine.run_events(jobs, idle):
        if event is None:
            yield None
            continue
        position, outcome = event
        item = waiting[position]
        if item.tracker is not None:
            item.tracker.done()
        if isinstance(outcome, SshError):
            yield _failed(item.index, item.host, _refusal(prepared[item.host.host_id].host, outcome))
        else:
            yield _ran(item, outcome)
    # As a session's opening does: the admin's host list shows when each host was last reached.
    connected = sorted({item.host.host_id for item in waiting if item.connected_now})
    if connected:
        now = timezone.now()
        retrying(
            lambda: Host.objects.filter(pk__in=connected).update(last_connected_at=now),
            "recording the hosts' last connection",
        )


PoolKey = tuple[str, int]  # the engine's pool key of a host's connection: (owner, host id)
Source = tuple[object, ...] | None  # hosts.specs.spec_source


class _Specs:
    """The connect specs of the engine's pooled connections, kept while their hosts' sources stay.

    A warm batch reuses its pooled connections: decrypting each host's credential and building
    its spec again cost the batch's thread about 40 µs a host, only for the engine to find it
    equal. A spec is kept (with its decrypted secrets, in this process's memory only) under its
    connection's pool key with its host's ``spec_source``, and let go when that connection
    leaves the pool (``BatchEngine.on_drop``); a changed source builds a new spec, which the
    engine sees differ and opens a new connection for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[Hashable, tuple[tuple[object, ...], ConnectSpec]] = {}
        self._listening: c_batch.BatchEngine | None = None

    def spec(self, key: PoolKey, ready: PreparedHost) -> tuple[Source, ConnectSpec]:
        """The host's source and spec: the one kept for ``key`` if its source is unchanged, else a new one."""
        source = spec_source(ready.host, ready.trusted)
        with self._lock:
            kept = self._kept.get(key)
        if source is not None and kept is not None and kept[0] == source:
            return source, kept[1]
        return source, build_spec(ready.host, ready.trusted)  # the one place its credential is decrypted

    def keep(self, engine: c_batch.BatchEngine, kept: Sequence[tuple[PoolKey, Source, ConnectSpec]]) -> None:
        """Keep the specs of jobs about to be handed to ``engine`` (pool key, source, spec)."""
        if self._listening is not engine:
            engine.on_drop(self.dropped)
            self._listening = engine
        with self._lock:
            for key, source, connect in kept:
                if source is not None:
                    self._kept[key] = (source, connect)
                else:
                    self._kept.pop(key, None)

    def dropped(self, key: Hashable, spec: ConnectSpec) -> None:
        """The engine's connection of ``key`` left its pool: its spec goes with it."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[1] is spec:
                del self._kept[key]

    def kept_keys(self) -> list[PoolKey]:
        """The pool keys whose specs are kept."""
        with self._lock:
            return [key for key in self._kept if isinstance(key, tuple)]


specs = _Specs()


def _job(
    owner: str, ready: PreparedHost, spec: CommandSpec, shared: ExecRequest | None
) -> tuple[PoolKey, Source, ConnectSpec, ExecRequest, tuple[str, ...]]:
    """The host's pool key, spec (and its source), request and what to redact from its output.

    ``shared``: the request of every host (None with sudo: each host's stdin starts with its
    own password). Raises DispatchError as the tasks do.
    """
    host = ready.host
    if not host.enabled:
        raise DispatchError(Failure.HOST_DISABLED, f"host '{host.name}' is disabled by an administrator")
    key: PoolKey = (owner, host.pk)
    try:
        source, connect = specs.spec(key, ready)
    except credentials.NoCredential as exc:
        raise DispatchError(Failure.NO_CREDENTIAL, str(exc)) from None
    if shared is not None:
        return key, source, connect, shared, connect.secrets
    # Decrypted here, where the connection is, and only for this run: first line of stdin.
    try:
        password = retrying(lambda: credentials.sudo_password(host.pk), "reading the sudo password")
    except credentials.NoSudoPassword as exc:
        raise DispatchError(Failure.NO_SUDO_PASSWORD, str(exc)) from None
    return key, source, connect, _request(spec, password), (*connect.secrets, password)


def _request(spec: CommandSpec, sudo_password: str | None) -> ExecRequest:
    stdin = spec.stdin.encode() if spec.stdin is not None else None
    if sudo_password is not None:
        stdin = sudo_password.encode() + b"\n" + (stdin or b"")
    return ExecRequest(
        command=spec.command,
        working_directory=spec.working_directory,
        timeout=spec.timeout,
        stdin=stdin,
        max_output_bytes=settings.MAX_OUTPUT_BYTES,
        sudo=spec.sudo,
    )


def _refusal(host: Host, exc: SshError) -> DispatchError:
    if isinstance(exc, HostKeyUnknown | HostKeyChanged):
        return tasks.host_key_refusal(host, exc)
    return tasks.ssh_failure(exc)


def _failed(index: int, host: EngineHost, exc: DispatchError) -> Ended:
    """As ``HostCall.fail`` completes the row of a call its dispatcher refused."""
    status = Status.INTERRUPTED if exc.kind.outcome_unknown else Status.ERROR
    completion = Completion(status, None, error=exc.message, details=host.details)
    return Ended(index, "error", None, exc.message, completion)


def _ran(item: _Prepared, result: ExecResult) -> Ended:
    """As ``RunCommand.run`` makes a command's result and row (``hostcall.ran_outcome``), its output
    redacted of the host's secrets first."""
    stdout, stderr = redact(result.stdout, item.secrets), redact(result.stderr, item.secrets)
    changed = stdout is not result.stdout or stderr is not result.stderr
    shown = replace(result, stdout=stdout, stderr=stderr) if changed else result
    details = {**item.host.details, "host_key_fingerprint": item.fingerprint}
    status, completion = ran_outcome(shown, session_id=None, reconnected=False, details=details)
    return Ended(item.index, status, shown, completion.error, completion)
