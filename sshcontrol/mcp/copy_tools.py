"""``ssh_copy`` and ``ssh_copy_many``: a file from one host to others, never through the server's disk.

Each end is its own audited call: the source authorized for reading (``host_call``), each
destination for writing, every row opened before anything is copied and completed with the
size and SHA-256 of the bytes that moved (each row names the other end). How the bytes move
(one process, or worker to worker through the broker) is ``sshcontrol/copying.py``.

``ssh_copy_many`` is a separate tool, as ``ssh_upload_many`` is beside ``ssh_upload_file``:
one result shape per tool, and the batch arguments mean nothing for one destination. Its
destinations are a batch of ``fleet.run_batch`` (one row per destination with the batch id;
a destination the caller may not write is ``refused`` in the result, not the whole call);
the source's read row is opened before the batch, carries the same batch id, and is
completed after it. A source the caller may not read refuses the whole call.

Registered by ``tools.register``; offered to callers that may read and write files somewhere
(``mcp/visibility.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from audit.models import AuditEvent
from hosts.access import Permission
from sshcontrol import fleet
from sshcontrol.caller import Caller
from sshcontrol.calllog import observed
from sshcontrol.copying import CopyEach
from sshcontrol.dbretry import DatabaseUnavailable
from sshcontrol.fleet import BatchOutcome, BatchRefused, Plan
from sshcontrol.fleet_files import TransferResult
from sshcontrol.hostcall import AuditFields, HostCall, host_call
from sshcontrol.mcp import fleet_file_tools as many
from sshcontrol.mcp.arguments import (
    BatchReasonArg,
    BatchSizeArg,
    FormatArg,
    HostArg,
    HostsArg,
    ParallelArg,
    RemotePathArg,
    SessionIdArg,
    StopArg,
    TagArg,
)
from sshcontrol.mcp.batch_progress import hosts_done_reporter
from sshcontrol.mcp.identity import own_client
from sshcontrol.mcp.schemas import BatchSummary
from sshcontrol.mcp.tools import (
    Tools,
    describe,
    hints,
    offered_only,
    parse_file_mode,
    refusing_nul,
    serve,
)
from sshcontrol.taskspec import CopySpec

Status = AuditEvent.Status
ToHostsArg = Annotated[HostsArg, Field(description="The destinations: registered host names (or to_tag).")]
ToTagArg = Annotated[TagArg, Field(description="The destinations: every host with this tag you may use.")]


class CopyResult(BaseModel):
    from_session_id: str
    from_host: str
    from_path: str
    to_session_id: str
    to_host: str
    to_path: str
    bytes: int
    sha256: str
    from_audit_id: int
    to_audit_id: int


def render(result: CopyResult) -> str:
    return (
        f"Copied {result.bytes} bytes from `{result.from_path}` on **{result.from_host}** to "
        f"`{result.to_path}` on **{result.to_host}**.\n"
        f"SHA-256 {result.sha256}. Audit #{result.from_audit_id} (source), "
        f"#{result.to_audit_id} (destination)."
    )


def _one_of(session_id: str | None, host: str | None, end: str) -> None:
    if (session_id is None) == (host is None):
        raise ToolError(f"give exactly one of {end}_session_id or {end}_host")


def _source_call(
    tool: str,
    caller: Caller,
    session_id: str | None,
    host: str | None,
    path: str,
    batch_id: str | None,
    details: dict[str, Any] | None = None,
) -> AbstractContextManager[HostCall]:
    """The source's audited call: authorized for reading the file it names."""
    return host_call(
        tool,
        caller,
        session_id=session_id,
        host_name=host,
        permission=Permission.READ,
        audit=AuditFields(remote_path=path, batch_id=batch_id),
        details={"copy_end": "source", **(details or {})},
    )


class CopyManyResult(BaseModel):
    batch_id: str = Field(description="the batch's id: the source's row and every destination's carry it")
    from_session_id: str
    from_host: str
    from_path: str
    from_audit_id: int = Field(description="the source's read row")
    to_path: str
    bytes: int | None = Field(description="the source's size, as the copies read it")
    sha256: str = Field(
        description="the source's SHA-256 as every copy read it; each destination's is checked against "
        "it ('' when no copy was made, or the copies differ: see source_changed)"
    )
    source_changed: bool = Field(description="the copies read different bytes: the file changed meanwhile")
    summary: BatchSummary
    results: list[many.HostTransfer]
    stopped_early: bool


def render_many(result: CopyManyResult) -> str:
    head = (
        f"Copy of `{result.from_path}` on **{result.from_host}** to `{result.to_path}` on "
        f"{result.summary.total} host(s): {many.counted(result.summary)}. Batch `{result.batch_id}`, "
        f"source audit #{result.from_audit_id}."
    )
    parts = [head, *many.stopped(result.stopped_early)]
    done = [r.host for r in result.results if r.status == "ok"]
    if result.source_changed:
        parts.append("**The source changed during the copy:** the destinations hold different files.")
        parts += [
            f"**{g.count} host(s), {g.bytes} bytes, SHA-256 {g.sha256}:** {', '.join(g.hosts)}"
            for g in many.hash_groups(result.results)
        ]
    elif done:
        parts.append(
            f"**Written ({result.bytes} bytes, SHA-256 {result.sha256}, checked on each):** {', '.join(done)}"
        )
    return "\n\n".join(parts + many.problems(result.results))


def _source_outcome(source: HostCall, outcome: BatchOutcome) -> tuple[int | None, str, bool]:
    """Complete the source's row from the copies made; their size, SHA-256, and whether they differ."""
    made = {(r.size, r.sha256) for r in outcome.results if isinstance(r, TransferResult) and r.status == "ok"}
    source.details["destinations_written"] = sum(r.status == "ok" for r in outcome.results)
    source.details["destinations"] = len(outcome.results)
    if len(made) != 1:
        if made:
            source.details["source_changed"] = True
        source.complete(Status.OK if made else Status.ERROR)
        return None, "", len(made) > 1
    size, sha256 = made.pop()
    source.complete(file_size=size, file_sha256=sha256)
    return size, sha256, False


@dataclass(frozen=True)
class Source:
    session_id: str | None
    host: str | None
    path: str


@dataclass(frozen=True)
class BatchArgs:
    hosts: list[str] | None
    tag: str | None
    plan: Plan
    batch_id: str
    reason: str


def copy_to_many(
    caller: Caller,
    source_arg: Source,
    spec: CopySpec,
    batch: BatchArgs,
    progress: Callable[[int, int], None],
    cancelled: threading.Event,
    on_start: Callable[[fleet.Batch], None],
) -> CopyManyResult:
    """The source's read row around the batch of destinations (``fleet.run_batch`` with ``CopyEach``).

    The row names the destinations asked for from its opening: a call refused before the batch
    (the database away, the source not readable) says in its one row what it would have written.
    """
    asked = {"copy_to_path": spec.dest_path, **fleet.requested(batch.hosts, batch.tag)}
    with _source_call(
        "ssh_copy_many",
        caller,
        source_arg.session_id,
        source_arg.host,
        source_arg.path,
        batch.batch_id,
        asked,
    ) as source:
        # The source's session is opened (or reused) before the batch: every copy reads through it.
        op = CopyEach(source.session_id, source.host.name, source.event_id, spec, reason=batch.reason)
        try:
            outcome = fleet.run_batch(
                caller,
                op,
                hosts=batch.hosts,
                tag=batch.tag,
                plan=batch.plan,
                progress=progress,
                cancelled=cancelled,
                on_start=on_start,
                batch_id=batch.batch_id,
            )
        except BatchRefused as exc:
            source.fail(str(exc), Status.DENIED)
        except DatabaseUnavailable as exc:
            source.fail(f"{exc}; nothing was copied")
        size, sha256, changed = _source_outcome(source, outcome)
        return CopyManyResult(
            batch_id=outcome.batch_id,
            from_session_id=source.session_id,
            from_host=source.host.name,
            from_path=spec.source_path,
            from_audit_id=source.event_id,
            to_path=spec.dest_path,
            bytes=size,
            sha256=sha256,
            source_changed=changed,
            summary=many.summary_of(outcome),
            results=[many.host_transfer(r, spec.dest_path) for r in outcome.results],
            stopped_early=outcome.stopped_early,
        )


def register(server: MCPServer, tools: Tools) -> None:
    async def ssh_copy(
        ctx: Context,
        from_path: Annotated[RemotePathArg, Field(description="The file to copy, on the source host.")],
        to_path: Annotated[RemotePathArg, Field(description="Where to write it on the destination host.")],
        from_session_id: Annotated[SessionIdArg, Field(description="The source: a session id.")] = None,
        from_host: Annotated[HostArg, Field(description="The source: a host name (instead).")] = None,
        to_session_id: Annotated[SessionIdArg, Field(description="The destination: a session id.")] = None,
        to_host: Annotated[HostArg, Field(description="The destination: a host name (instead).")] = None,
        file_mode: Annotated[
            int | str | None,
            Field(description='Octal permissions of the new file, e.g. "0644" (default: the server\'s).'),
        ] = None,
        overwrite: Annotated[bool, Field(description="Replace an existing destination file.")] = False,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, CopyResult]:
        """Copy a file from one host to another (or within one host), streamed between the two SSH
        sessions without passing through the server's disk. Needs read access on the source and write
        access on the destination. Written to a temporary name and renamed into place; an existing file
        is kept unless overwrite is true. Returns the size and SHA-256, and one audit id per end."""
        caller = tools.caller(ctx)
        _one_of(from_session_id, from_host, "from")
        _one_of(to_session_id, to_host, "to")
        mode = parse_file_mode(file_mode)

        def work() -> CopyResult:
            with (
                _source_call("ssh_copy", caller, from_session_id, from_host, from_path, None) as source,
                host_call(
                    "ssh_copy",
                    caller,
                    session_id=to_session_id,
                    host_name=to_host,
                    permission=Permission.WRITE,
                    audit=AuditFields(remote_path=to_path),
                    details={"copy_end": "destination"},
                ) as dest,
            ):
                # Each row names the other end, so either one leads to the whole copy.
                source.details.update(
                    copy_to_host=dest.host.name, copy_to_path=to_path, copy_audit_id=dest.event_id
                )
                dest.details.update(
                    copy_from_host=source.host.name, copy_from_path=from_path, copy_audit_id=source.event_id
                )
                spec = CopySpec(from_path, to_path, overwrite=overwrite, mode=mode)
                # A failure completes the destination's row first; the source's by its own block.
                done = dest.copy_here(source.session_id, spec)
                if done.reconnected:
                    source.details["reconnected"] = True
                to_audit = dest.complete(file_size=done.size, file_sha256=done.sha256)
                from_audit = source.complete(file_size=done.size, file_sha256=done.sha256)
                return CopyResult(
                    from_session_id=source.session_id,
                    from_host=source.host.name,
                    from_path=from_path,
                    to_session_id=dest.session_id,
                    to_host=dest.host.name,
                    to_path=done.dest_path,
                    bytes=done.size,
                    sha256=done.sha256,
                    from_audit_id=from_audit,
                    to_audit_id=to_audit,
                )

        return await serve(work, render, response_format)

    async def ssh_copy_many(
        ctx: Context,
        from_path: Annotated[RemotePathArg, Field(description="The file to copy, on the source host.")],
        to_path: Annotated[RemotePathArg, Field(description="Where to write it on each destination host.")],
        from_session_id: Annotated[SessionIdArg, Field(description="The source: a session id.")] = None,
        from_host: Annotated[HostArg, Field(description="The source: a host name (instead).")] = None,
        to_hosts: ToHostsArg = None,
        to_tag: ToTagArg = None,
        file_mode: Annotated[
            int | str | None,
            Field(description='Octal permissions of the new files, e.g. "0644" (default: the server\'s).'),
        ] = None,
        overwrite: Annotated[bool, Field(description="Replace existing destination files.")] = False,
        max_parallel: ParallelArg = 50,
        batch_size: BatchSizeArg = None,
        stop_after_failures: StopArg = None,
        reason: BatchReasonArg = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, CopyManyResult]:
        """Copy a file from one host to many hosts (names or a tag) in parallel, streamed between SSH
        sessions, not through the server's disk. Needs read access on the source and write access on each
        destination (refused ones are listed in the result). Temporary name and rename, SHA-256 checked;
        an existing file is kept unless overwrite. Returns counts per status and one result per host."""
        caller = tools.caller(ctx)
        _one_of(from_session_id, from_host, "from")
        many.check_selection(to_hosts, to_tag, ("to_hosts", "to_tag"))
        own_client(caller)
        mode = parse_file_mode(file_mode)
        report = hosts_done_reporter(ctx)

        cancelled = threading.Event()
        started: list[fleet.Batch] = []
        batch_id = fleet.new_batch_id()

        def work() -> CopyManyResult:
            source = Source(from_session_id, from_host, from_path)
            spec = CopySpec(from_path, to_path, overwrite=overwrite, mode=mode)
            batch = BatchArgs(
                to_hosts, to_tag, Plan(max_parallel, batch_size, stop_after_failures), batch_id, reason or ""
            )
            return copy_to_many(caller, source, spec, batch, report, cancelled, started.append)

        def on_cancel() -> None:
            cancelled.set()
            for batch in started:
                batch.cancel()

        return await serve(work, render_many, response_format, on_cancel=on_cancel)

    for fn, title in ((ssh_copy, "Copy a file between hosts"), (ssh_copy_many, "Copy a file to many hosts")):
        server.add_tool(
            observed(offered_only(tools, fn.__name__, refusing_nul(fn))),
            name=fn.__name__,
            title=title,
            description=describe(fn),
            annotations=hints(read_only=False, destructive=True, idempotent=True, open_world=True),
        )
