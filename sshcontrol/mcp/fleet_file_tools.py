"""``ssh_upload_many`` and ``ssh_download_many``: one file to many hosts, one file from each of many hosts.

Separate tools rather than ``hosts``/``tag`` arguments on ``ssh_upload_file`` and
``ssh_download_file``: a client reads one result shape per tool (a single transfer's result,
or a batch's summary and per-host results), the batch arguments (``max_parallel``,
``batch_size``, ``stop_after_failures``, ``local_dir``) mean nothing for one host, and the
names follow ``ssh_execute_many``. The batch is ``sshcontrol/fleet.py``; the per-host
operations are ``sshcontrol/fleet_files.py``; this module checks the arguments, hashes an
upload's source once, and turns the outcome into the typed result.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from sshcontrol import fleet, localfiles
from sshcontrol.calllog import observed
from sshcontrol.dbretry import DatabaseUnavailable
from sshcontrol.fleet import BatchOutcome, BatchRefused, HostOperation, HostResult, Plan
from sshcontrol.fleet_files import (
    DownloadEach,
    TransferResult,
    UploadEach,
    file_name_of,
    make_directories,
    sha256_of,
)
from sshcontrol.mcp.arguments import (
    BatchFormatArg,
    BatchReasonArg,
    BatchSizeArg,
    ContentArg,
    ContentEncodingArg,
    FileModeArg,
    HostsArg,
    OverwriteArg,
    ParallelArg,
    RemotePathArg,
    StopArg,
    TagArg,
)
from sshcontrol.mcp.batch_progress import hosts_done_reporter
from sshcontrol.mcp.identity import own_client
from sshcontrol.mcp.schemas import BatchSummary, ResponseFormat
from sshcontrol.taskspec import UploadSpec

if TYPE_CHECKING:
    from sshcontrol.mcp.tools import Tools

HostStatus = Literal["ok", "failed", "timed_out", "refused", "skipped", "error"]
M = TypeVar("M", bound=BaseModel)


class HostTransfer(BaseModel):
    host: str
    status: HostStatus = Field(
        description="ok, refused (not allowed: grants, limits), skipped (not started: the batch stopped), "
        "error (the transfer failed: see error)"
    )
    remote_path: str
    local_path: str | None = Field(default=None, description="downloads: this host's file")
    bytes: int | None = None
    sha256: str = ""
    error: str = ""
    audit_id: int


class UploadManyResult(BaseModel):
    batch_id: str = Field(description="the batch's id: every host's audit row carries it")
    remote_path: str
    source: str = Field(description="the local file sent, or 'inline content'")
    bytes: int
    sha256: str = Field(description="the source's SHA-256; each host's is checked against it")
    summary: BatchSummary
    results: list[HostTransfer]
    stopped_early: bool


class HashGroup(BaseModel):
    """Hosts whose file came back identical (same SHA-256)."""

    sha256: str
    bytes: int | None
    hosts: list[str]
    count: int


class DownloadManyResult(BaseModel):
    batch_id: str = Field(description="the batch's id: every host's audit row carries it")
    remote_path: str
    local_dir: str = Field(description="each host's file is <local_dir>/<host>/<file name>")
    summary: BatchSummary
    groups: list[HashGroup] = Field(
        description="hosts downloaded, grouped by identical SHA-256; largest first"
    )
    results: list[HostTransfer]
    stopped_early: bool


def host_transfer(result: HostResult, remote_path: str) -> HostTransfer:
    if isinstance(result, TransferResult):
        return HostTransfer(
            host=result.host,
            status=result.status,
            remote_path=result.remote_path or remote_path,
            local_path=result.local_path or None,
            bytes=result.size,
            sha256=result.sha256,
            error=result.error,
            audit_id=result.audit_id,
        )
    return HostTransfer(
        host=result.host,
        status=result.status,
        remote_path=remote_path,
        error=result.error,
        audit_id=result.audit_id,
    )


def summary_of(outcome: BatchOutcome) -> BatchSummary:
    return BatchSummary(**fleet.summary(outcome.results), total=len(outcome.results))


def hash_groups(results: Sequence[HostTransfer]) -> list[HashGroup]:
    grouped: dict[str, list[HostTransfer]] = {}
    for r in results:
        if r.status == "ok":
            grouped.setdefault(r.sha256, []).append(r)
    groups = [
        HashGroup(sha256=sha, bytes=rs[0].bytes, hosts=[r.host for r in rs], count=len(rs))
        for sha, rs in grouped.items()
    ]
    return sorted(groups, key=lambda g: -g.count)


def counted(s: BatchSummary) -> str:
    pairs = ((s.ok, "ok"), (s.refused, "refused"), (s.skipped, "skipped"), (s.error, "error"))
    return ", ".join(
        f"{n} {label}" for n, label in (*pairs, (s.failed, "failed"), (s.timed_out, "timed out")) if n
    )


def problems(results: Sequence[HostTransfer]) -> list[str]:
    others = [r for r in results if r.status != "ok"]
    if not others:
        return []
    rows = ["| host | status | audit | why |", "|---|---|---|---|"]
    rows += [
        f"| {r.host} | {r.status} | #{r.audit_id} | {r.error.replace('|', '/').replace(chr(10), ' ')} |"
        for r in others
    ]
    return ["\n".join(rows)]


def stopped(stopped: bool) -> list[str]:
    return ["stop_after_failures was reached: later batches did not start (skipped)."] if stopped else []


def render_upload(result: UploadManyResult) -> str:
    head = (
        f"Upload of {result.source} ({result.bytes} bytes, SHA-256 {result.sha256}) "
        f"to `{result.remote_path}` on {result.summary.total} host(s): {counted(result.summary)}. "
        f"Batch `{result.batch_id}`."
    )
    done = [r.host for r in result.results if r.status == "ok"]
    parts = [head, *stopped(result.stopped_early)]
    if done:
        parts.append(f"**Written, SHA-256 checked:** {', '.join(done)}")
    return "\n\n".join(parts + problems(result.results))


def render_download(result: DownloadManyResult) -> str:
    head = (
        f"Download of `{result.remote_path}` from {result.summary.total} host(s) "
        f"into `{result.local_dir}/<host>/`: "
        f"{counted(result.summary)}. Batch `{result.batch_id}`."
    )
    parts = [head, *stopped(result.stopped_early)]
    for group in result.groups:
        shape = f"{group.count} host(s), {group.bytes} bytes, SHA-256 {group.sha256}"
        parts.append(f"**{shape}:** {', '.join(group.hosts)}")
    return "\n\n".join(parts + problems(result.results))


RemotePath = Annotated[RemotePathArg, Field(description="Path on each host.")]


def check_selection(
    hosts: list[str] | None, tag: str | None, names: tuple[str, str] = ("hosts", "tag")
) -> None:
    """Exactly one of the two arguments (named ``names`` in the tool) choosing the hosts."""
    hosts_arg, tag_arg = names
    if (hosts is None) == (tag is None):
        raise ToolError(f"give exactly one of {hosts_arg} or {tag_arg}")
    if hosts is not None and any("\x00" in h for h in hosts):
        raise ToolError(f"{hosts_arg} contains a NUL byte; remove it")
    if hosts is not None and not hosts:
        raise ToolError(f"{hosts_arg} is empty; name at least one host")


class FleetFileTools:
    """The fleet transfer tools, sharing the single-host tools' caller and progress plumbing."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    async def _run(
        self,
        ctx: Context,
        prepare: Callable[[], HostOperation],
        finish: Callable[[BatchOutcome], M],
        render: Callable[[M], str],
        response_format: ResponseFormat,
        *,
        hosts: list[str] | None,
        tag: str | None,
        plan: Plan,
    ) -> CallToolResult:
        """Run the batch off the event loop, reporting "N of M hosts done", cancelling in-flight hosts."""
        caller = self.tools.caller(ctx)
        check_selection(hosts, tag)
        own_client(caller)
        report = hosts_done_reporter(ctx)

        cancelled = threading.Event()
        started: list[fleet.Batch] = []

        def work() -> M:
            try:
                op = prepare()
            except localfiles.LocalPathError as exc:
                raise ToolError(str(exc)) from None
            try:
                outcome = fleet.run_batch(
                    caller,
                    op,
                    hosts=hosts,
                    tag=tag,
                    plan=plan,
                    progress=report,
                    cancelled=cancelled,
                    on_start=started.append,
                )
            except BatchRefused as exc:
                raise ToolError(str(exc)) from None
            except DatabaseUnavailable as exc:
                refused = fleet.refuse_unchecked(caller, op, hosts, tag, exc, "nothing was transferred")
                raise ToolError(refused) from None
            return finish(outcome)

        def on_cancel() -> None:
            cancelled.set()
            for batch in started:
                batch.cancel()

        from sshcontrol.mcp.tools import serve

        return await serve(work, render, response_format, on_cancel=on_cancel)

    async def ssh_upload_many(
        self,
        ctx: Context,
        remote_path: RemotePath,
        hosts: HostsArg = None,
        tag: TagArg = None,
        local_path: Annotated[
            str | None,
            Field(max_length=4096, description="File in the server's transfer directory (or content)."),
        ] = None,
        content: ContentArg = None,
        content_encoding: ContentEncodingArg = "utf-8",
        file_mode: FileModeArg = None,
        overwrite: OverwriteArg = False,
        max_parallel: ParallelArg = 50,
        batch_size: BatchSizeArg = None,
        stop_after_failures: StopArg = None,
        reason: BatchReasonArg = None,
        response_format: BatchFormatArg = "markdown",
    ) -> Annotated[CallToolResult, UploadManyResult]:
        """Upload one file (from the transfer directory, or inline content) to many hosts in parallel
        (host names, or a tag). Each host gets it through a temporary name and rename, its SHA-256 checked
        against the source's; an existing file is kept unless overwrite. Returns counts per status and
        one result per host, each authorized and audited alone."""
        from sshcontrol.mcp.tools import decoded, parse_file_mode

        if (local_path is None) == (content is None):
            raise ToolError("give exactly one of local_path or content")
        mode = parse_file_mode(file_mode)
        data = decoded(content, content_encoding)
        summary: list[tuple[str, int, str]] = []

        def prepare() -> UploadEach:
            if data is not None:
                source, size, sha256, relative = (
                    "inline content",
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                    None,
                )
            else:
                assert local_path is not None
                with localfiles.open_source(local_path) as handle:  # hashed once, for every host
                    size, sha256 = sha256_of(handle)
                located = localfiles.locate(local_path)
                source, relative = located.shown, located.relative
            summary.append((source, size, sha256))
            spec = UploadSpec(remote_path, content=data, local_path=relative, mode=mode, overwrite=overwrite)
            shown = source if data is None else ""
            return UploadEach(spec, shown, size, sha256, reason=reason or "")

        def finish(outcome: BatchOutcome) -> UploadManyResult:
            source, size, sha256 = summary[0]
            return UploadManyResult(
                batch_id=outcome.batch_id,
                remote_path=remote_path,
                source=source,
                bytes=size,
                sha256=sha256,
                summary=summary_of(outcome),
                results=[host_transfer(r, remote_path) for r in outcome.results],
                stopped_early=outcome.stopped_early,
            )

        plan = Plan(max_parallel=max_parallel, batch_size=batch_size, stop_after_failures=stop_after_failures)
        return await self._run(
            ctx, prepare, finish, render_upload, response_format, hosts=hosts, tag=tag, plan=plan
        )

    async def ssh_download_many(
        self,
        ctx: Context,
        remote_path: RemotePath,
        local_dir: Annotated[
            str,
            Field(
                min_length=1,
                max_length=4096,
                description="Directory in the server's transfer directory; each host's file is saved "
                "as <local_dir>/<host>/<file name>.",
            ),
        ],
        hosts: HostsArg = None,
        tag: TagArg = None,
        overwrite: Annotated[bool, Field(description="Replace existing local files.")] = False,
        max_parallel: ParallelArg = 50,
        batch_size: BatchSizeArg = None,
        stop_after_failures: StopArg = None,
        reason: BatchReasonArg = None,
        response_format: BatchFormatArg = "markdown",
    ) -> Annotated[CallToolResult, DownloadManyResult]:
        """Download one file from many hosts in parallel (host names, or a tag) into the server's
        transfer directory, each host's copy as <local_dir>/<host>/<file name>; existing files are kept
        unless overwrite. Returns each host's size and SHA-256, hosts grouped by identical content, and
        counts per status; each host is authorized and audited alone."""
        shown: list[str] = []

        def prepare() -> DownloadEach:
            directory = localfiles.locate(local_dir)
            make_directories(directory.parts)  # refused here, before any host, if it cannot be used
            shown.append(directory.shown)
            return DownloadEach(
                remote_path, directory, file_name_of(remote_path), overwrite=overwrite, reason=reason or ""
            )

        def finish(outcome: BatchOutcome) -> DownloadManyResult:
            results = [host_transfer(r, remote_path) for r in outcome.results]
            return DownloadManyResult(
                batch_id=outcome.batch_id,
                remote_path=remote_path,
                local_dir=shown[0],
                summary=summary_of(outcome),
                groups=hash_groups(results),
                results=results,
                stopped_early=outcome.stopped_early,
            )

        plan = Plan(max_parallel=max_parallel, batch_size=batch_size, stop_after_failures=stop_after_failures)
        return await self._run(
            ctx, prepare, finish, render_download, response_format, hosts=hosts, tag=tag, plan=plan
        )


def register(server: MCPServer, tools: Tools) -> None:
    from sshcontrol.mcp.tools import describe, hints, offered_only, refusing_nul

    fleet_file_tools = FleetFileTools(tools)
    # (tool, title, read-only, destructive, idempotent, reaches the outside world), as tools.register
    specs: list[tuple[Any, str, bool, bool, bool, bool]] = [
        (fleet_file_tools.ssh_upload_many, "Upload a file to many hosts over SFTP", False, True, True, True),
        (
            fleet_file_tools.ssh_download_many,
            "Download a file from many hosts over SFTP",
            True,
            False,
            True,
            True,
        ),
    ]
    for fn, title, *flags in specs:
        server.add_tool(
            observed(offered_only(tools, fn.__name__, refusing_nul(fn))),
            name=fn.__name__,
            title=title,
            description=describe(fn),
            annotations=hints(*flags),
        )
