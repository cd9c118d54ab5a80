"""Remote commands left running by a holder that died, and the survivor that ends them.

Closing a non-pty channel does not stop a remote command, and a process killed with
``kill -9`` (or a lost machine) cannot kill the process groups of the commands it ran. So
every process holding sessions (a Celery worker, or ``mcp_serve`` itself on the embedded
default) records each running command's remote process group (``RemoteCommand``) as soon as
the remote shell reports it, and deletes the row when the command ends. The rows of commands
that start and end together (a batch's hosts) are written together (``_Recorder``).

A worker's row left behind is an orphan when its worker is dead (stale heartbeat, and no
answer to a ping over the broker: a worker whose database writes fail only looks dead) or
is a new life of the same node name (another process). An embedded holder is named for its
process run (``embedded:machine:pid:start``), so its row is an orphan once that run is gone
from this machine (``audit.process.is_alive``); a row of another machine is never guessed at.

Every worker sweeps with its heartbeat; an embedded ``mcp_serve`` sweeps the rows of dead
embedded holders when it starts and then every ``EMBEDDED_SWEEP_SECONDS``. A sweeper claims
a row (one conditional DELETE, so two sweepers never both act), connects to the host with
the host's pinned key and credential, kills the group (TERM, then KILL) and writes an audit
row ``orphan_kill`` that names the original call's audit row.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
from typing import Any

from django.db import close_old_connections, connections, router, transaction
from django.utils import timezone

from audit import writelock, writer
from audit.models import AuditEvent
from audit.process import current_process_key
from audit.statements import Insert, MultiInsert
from hosts.models import Host
from sshcontrol import holders, jobs
from sshcontrol.credentials import build_spec
from sshcontrol.dbretry import DatabaseUnavailable, postpone, retrying
from sshcontrol.models import RemoteCommand
from sshlib.connect import open_connection
from sshlib.execute import kill_process_group

log = logging.getLogger(__name__)

TOOL = "orphan_kill"
PING_SECONDS = 1.0
# An embedded server sweeps at start, where a killed predecessor's orphans are found; the
# periodic sweep only catches a sibling server killed meanwhile, so it can be slow.
EMBEDDED_SWEEP_SECONDS = 30.0


def recording() -> bool:
    """Every process that runs commands records them: a worker and an embedded server alike may die."""
    return True


# Precompiled (``audit.statements``): every command pays for these statements, and the ORM's
# create and delete cost several times the statements themselves.
_RECORD = Insert(
    RemoteCommand,
    ("worker", "worker_process", "session_id", "host_id", "pgid", "audit_event_id", "started_at"),
    returning=("id",),
)
_RECORD_MANY = MultiInsert(_RECORD)
# Rows per statement: 7 parameters each stays far below any backend's parameter limit.
CHUNK = 100


def _forget_sql(quote: Any, count: int) -> str:
    marks = ", ".join(["%s"] * count)
    return f"DELETE FROM {quote(RemoteCommand._meta.db_table)} WHERE {quote('id')} IN ({marks})"  # noqa: S608


def _record(rows: list[list[Any]]) -> list[int]:
    """Insert the rows (in chunks, each one statement); their ids, in order."""
    ids: list[int] = []
    connection = connections[router.db_for_write(RemoteCommand)]
    # Queued behind the process's other writers (audit rows) rather than in SQLite's busy handler.
    # One transaction: a retry after a lost reply must not find some chunks written already.
    with (
        writelock.serialized(connection),
        transaction.atomic(using=connection.alias, savepoint=False),
        connection.cursor() as cursor,
    ):
        for start in range(0, len(rows), CHUNK):
            ids += [int(i) for i in _RECORD_MANY.execute(cursor, rows[start : start + CHUNK])]
    return ids


def _forget(row_ids: list[int]) -> None:
    connection = connections[router.db_for_write(RemoteCommand)]
    with writelock.serialized(connection), connection.cursor() as cursor:
        for start in range(0, len(row_ids), CHUNK):
            chunk = row_ids[start : start + CHUNK]
            cursor.execute(_forget_sql(connection.ops.quote_name, len(chunk)), chunk)


def _embedded(worker: str) -> bool:
    return worker.startswith(holders.EMBEDDED_PREFIX)


class Tracker:
    """The ``RemoteCommand`` row of one running command: written on start, deleted at the end.

    The writes go through the process's ``_Recorder``, which writes the rows of commands that
    start (and end) together in one statement each. ``behind``: the rows are written by the
    recorder's own thread and ``started``/``done`` never wait for the database (the batch
    engine's commands report to one thread, which must not write their rows one by one).
    """

    def __init__(
        self, session_id: str, host_id: int, audit_event_id: int | None, *, behind: bool = False
    ) -> None:
        self.behind = behind
        self.session_id = session_id
        self.host_id = host_id
        self.audit_event_id = audit_event_id
        self.row_id: int | None = None
        self.values: list[Any] = []
        self.state = _State.NEW
        self.forget_when_written = False

    def started(self, pgid: int) -> None:
        self.values = [
            holders.current_worker(),
            current_process_key(),
            self.session_id,
            self.host_id,
            pgid,
            self.audit_event_id,
            timezone.now(),
        ]
        _recorder.started(self)

    def done(self) -> None:
        _recorder.done(self)


class _State(enum.Enum):
    NEW = "new"  # started() not called (the shell never reported its process group)
    QUEUED = "queued"  # waiting for the next write
    WRITING = "writing"  # in the statement being written
    WRITTEN = "written"  # row_id set (None: the write failed; the command ran unrecorded)
    DROPPED = "dropped"  # ended before its row was written: nothing to write, nothing to delete


class _Recorder:
    """Group commit of the ``RemoteCommand`` rows of one process.

    A command's thread that finds no write in progress writes its row at once (a lone
    ``ssh_execute`` records its group exactly as soon as before) and then, before it goes
    back to its command, every row queued meanwhile by other threads: those return at once.
    Fifty commands of a batch starting together thus cost a few statements instead of fifty
    INSERTs and fifty DELETEs contending for SQLite's one write lock, and a command that
    ended while its row still waited is never written at all. A queued row waits at most
    for the write in progress, so a holder killed meanwhile leaves unrecorded only the
    commands that started within that one write.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inserts: dict[int, Tracker] = {}  # id(tracker) -> tracker, in start order
        self._deletes: list[int] = []
        self._writing = False
        # The thread that writes for ``behind`` trackers, started at the first such write.
        self._writer: threading.Thread | None = None
        self._wake = threading.Condition(self._lock)
        self._handed = False

    def started(self, tracker: Tracker) -> None:
        with self._lock:
            tracker.state = _State.QUEUED
            self._inserts[id(tracker)] = tracker
            lead = self._lead_if_idle()
        if lead:
            self._write(tracker.behind)

    def done(self, tracker: Tracker) -> None:
        with self._lock:
            if tracker.state is _State.QUEUED:
                del self._inserts[id(tracker)]
                tracker.state = _State.DROPPED
                return
            if tracker.state is _State.WRITING:
                tracker.forget_when_written = True  # the writer deletes it right after
                return
            if tracker.state is not _State.WRITTEN or tracker.row_id is None:
                return
            self._deletes.append(tracker.row_id)
            tracker.row_id = None
            lead = self._lead_if_idle()
        if lead:
            self._write(tracker.behind)

    def _write(self, behind: bool) -> None:
        """Write what is queued: on this thread, or (``behind``) on the recorder's own."""
        if not behind:
            self._write_queued()
            return
        with self._lock:
            self._handed = True
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_behind, name="sshcontrol-command-rows", daemon=True
                )
                self._writer.start()
            self._wake.notify()

    def _write_behind(self) -> None:
        """The recorder's own thread: each time it is handed the lead, write what is queued."""
        while True:
            with self._lock:
                while not self._handed:
                    self._wake.wait()
                self._handed = False
            try:
                self._write_queued()
            except Exception:
                log.exception("could not write the process group rows")
            finally:
                # Its connection is not kept between bursts: a test database (or a failover)
                # must be able to drop it, and a burst reopening one costs well under a write.
                connections.close_all()

    def _lead_if_idle(self) -> bool:
        if self._writing:
            return False
        self._writing = True
        return True

    def _write_queued(self) -> None:
        """Write what is queued until nothing is (this thread is the only writer meanwhile)."""
        try:
            while True:
                with self._lock:
                    inserts = list(self._inserts.values())
                    self._inserts.clear()
                    deletes, self._deletes = self._deletes, []
                    if not inserts and not deletes:
                        self._writing = False
                        return
                    for tracker in inserts:
                        tracker.state = _State.WRITING
                if inserts:
                    self._insert(inserts)
                if deletes:
                    self._delete(deletes)
        except BaseException:
            with self._lock:
                self._writing = False
            raise

    def _insert(self, trackers: list[Tracker]) -> None:
        rows = [t.values for t in trackers]
        try:
            ids: list[int | None] = list(
                retrying(lambda: _record(rows), "recording the remote process groups", seconds=2.0)
            )
        except Exception:  # the commands run regardless; only their clean-up after a crash is lost
            log.exception("could not record the process groups of %d command(s)", len(rows))
            ids = [None] * len(trackers)
        with self._lock:
            for tracker, row_id in zip(trackers, ids, strict=True):
                tracker.state = _State.WRITTEN
                if tracker.forget_when_written:
                    if row_id is not None:
                        self._deletes.append(row_id)
                else:
                    tracker.row_id = row_id

    def _delete(self, row_ids: list[int]) -> None:
        what = f"forgetting {len(row_ids)} process group row(s)"
        try:
            retrying(lambda: _forget(row_ids), what)
        except DatabaseUnavailable:
            # Left behind, a row would make a survivor kill a group that has ended (whose id
            # the host may have reused): delete them once the database is back.
            postpone(lambda: _forget(row_ids), what)
        except Exception:
            log.exception("could not forget process group rows %s", row_ids)


_recorder = _Recorder()


def orphans() -> list[RemoteCommand]:
    """Rows of commands whose holder is gone.

    A worker sees dead nodes (to be confirmed by a ping), its node's previous lives and dead
    embedded holders of this machine; an embedded server sees only the latter (it has no
    broker to confirm a worker's death with).
    """
    me = holders.current_worker()
    if _embedded(me):
        rows = RemoteCommand.objects.filter(worker__startswith=holders.EMBEDDED_PREFIX).exclude(worker=me)
        return [row for row in rows.order_by("id") if holders.worker_alive(row.worker) is False]
    live = set(holders.live_workers())
    rows = RemoteCommand.objects.exclude(worker__in=live - {me}).order_by("id")
    return [row for row in rows if _orphaned_for_worker(row, me)]


def _orphaned_for_worker(row: RemoteCommand, me: str) -> bool:
    if _embedded(row.worker):
        return holders.worker_alive(row.worker) is False
    return row.worker != me or row.worker_process != current_process_key()


def answers_ping(node: str) -> bool:
    """Whether ``node`` answers over the broker: a worker whose heartbeat only looks stale
    (its database writes failing) is alive, and its running commands are not orphans."""
    from sshcontrol.celery import app

    try:
        return bool(app.control.ping(destination=[node], timeout=PING_SECONDS))
    except Exception:
        return True  # cannot tell: never kill on a guess


def sweep() -> int:
    """Kill the process groups of orphaned commands; return how many were handled."""
    handled = 0
    me = holders.current_worker()
    alive: dict[str, bool] = {}
    for row in retrying(orphans, "looking for orphaned commands"):
        if row.worker != me and not _embedded(row.worker):  # an embedded row is known dead already
            if row.worker not in alive:
                alive[row.worker] = answers_ping(row.worker)
            if alive[row.worker]:
                continue
        # Claim it: of two sweepers, only the one whose DELETE removed the row acts.
        if retrying(functools.partial(_claim, row.pk), "claiming an orphan") != 1:
            continue
        try:
            kill_orphan(row)
        except Exception:
            log.exception("could not kill orphaned process group %s on session %s", row.pgid, row.session_id)
            row.save(force_insert=True)  # put it back for the next sweep
            continue
        handled += 1
    return handled


def start_embedded_sweeper(stop: threading.Event) -> threading.Thread:
    """In an embedded server: sweep now (a killed predecessor's commands), then now and then."""

    def loop() -> None:
        while True:
            try:
                close_old_connections()
                sweep()
            except Exception:  # a failed sweep leaves its rows for the next one
                log.exception("orphan sweep failed")
            jobs.housekeeping()  # jobs of dead holders marked lost; expired ones removed
            if stop.wait(EMBEDDED_SWEEP_SECONDS):
                return

    # Its own thread: connecting to a host may block, and must not hold up the server's start.
    thread = threading.Thread(target=loop, name="sshcontrol-orphans", daemon=True)
    thread.start()
    return thread


def _claim(row_id: int) -> int:
    return RemoteCommand.objects.filter(pk=row_id).delete()[0]


def kill_orphan(row: RemoteCommand) -> None:
    """Connect to the row's host, kill the process group, and audit it."""
    host = Host.objects.select_related("credential").filter(pk=row.host_id).first() if row.host_id else None
    me = holders.current_worker()
    details: dict[str, Any] = {
        "audit_event": row.audit_event_id,
        "pgid": row.pgid,
        "dead_worker": row.worker,
        "started_at": row.started_at.isoformat(),
    }

    def audit_row() -> int:
        return writer.begin(
            tool=TOOL,
            actor=f"{'server' if _embedded(me) else 'worker'} {me}",
            transport="embedded" if _embedded(me) else "worker",
            host=host,
            session_id=row.session_id,
            command=f"kill -TERM -- -{row.pgid} (then -KILL)",
            details=details,
        )

    if host is None:
        writer.complete(audit_row(), status=AuditEvent.Status.ERROR, error="the host was removed")
        return
    # Unreachable: raised, and the row is put back for the next sweep (audited once it works).
    connection = open_connection(build_spec(host))
    event_id = audit_row()
    try:
        signal = kill_process_group(connection.client, row.pgid)
    finally:
        connection.close()
    writer.complete(
        event_id,
        status=AuditEvent.Status.OK,
        signal=signal or "",
        error="" if signal else "the process group had already ended",
        details={"killed_at": timezone.now().isoformat()},
    )
    log.warning(
        "killed orphaned process group %s (%s) left by %s on session %s",
        row.pgid,
        signal or "already gone",
        row.worker,
        row.session_id,
    )
