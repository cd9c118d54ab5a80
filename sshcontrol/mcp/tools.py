"""The MCP tools. Names match the original ssh-mcp server so existing prompts carry over.

Every tool is ``async`` (client cancellation reaches it) and hands its synchronous work
(ORM, SSH) to ``threads.in_thread``. A tool's docstring is its description; its return
annotation is its output schema.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import inspect
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from django.conf import settings
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from audit.models import AuditEvent
from audit.output_hygiene import Cleaned, clean
from hosts import approvals, visible
from hosts.access import Permission, access_for, visible_hosts
from hosts.access import cached as cached_access
from hosts.access_models import ApprovalRequest
from hosts.inventory import list_hosts
from hosts.models import Host
from hosts.policy import Verdict
from sshcontrol import calllog, localfiles
from sshcontrol.caller import Caller
from sshcontrol.calllog import observed
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.hostcall import AuditFields, CallRefused, host_call, refuse
from sshcontrol.jobs import new_job_id
from sshcontrol.mcp import fleet_file_tools, fleet_tools, render, visibility
from sshcontrol.mcp.adhoc import register as register_adhoc
from sshcontrol.mcp.approval_flow import await_decision, held_back
from sshcontrol.mcp.approved_runs import checked_timeout, run_approved
from sshcontrol.mcp.arguments import (
    CommandArg,
    ContentArg,
    ContentEncodingArg,
    FileModeArg,
    FormatArg,
    HostArg,
    LocalPathArg,
    OverwriteArg,
    ReasonArg,
    RemotePathArg,
    SessionIdArg,
    StdinArg,
    SudoArg,
    TimeoutArg,
    WorkingDirectoryArg,
)
from sshcontrol.mcp.batch_approval import run_approved_batch
from sshcontrol.mcp.budget import file_page, hide_key_tail
from sshcontrol.mcp.hostlist import empty_reason
from sshcontrol.mcp.identity import ClientRef, caller_for, own_client
from sshcontrol.mcp.job_tools import JobTools, foreground_limit, run_in_foreground
from sshcontrol.mcp.schemas import (
    ApprovalStatusResult,
    ConnectResult,
    DisconnectResult,
    DownloadResult,
    ExecuteResult,
    FileEntryInfo,
    HostInfo,
    HostList,
    ListFilesResult,
    ResponseFormat,
    SessionInfo,
    StatusResult,
    UploadResult,
    warnings_of,
)
from sshcontrol.mcp.threads import in_thread
from sshcontrol.mcp.visibility import Offer
from sshcontrol.models import SshSession
from sshcontrol.taskspec import CommandSpec, DownloadSpec, ListSpec, UploadSpec

Status = AuditEvent.Status
M = TypeVar("M", bound=BaseModel)


def respond(model: BaseModel, markdown: str, response_format: ResponseFormat) -> CallToolResult:
    text = markdown if response_format == "markdown" else model.model_dump_json(indent=2)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


async def serve(
    work: Callable[[], M],
    markdown: Callable[[M], str],
    response_format: ResponseFormat,
    on_cancel: Callable[[], None] | None = None,
) -> CallToolResult:
    """Run a tool's synchronous ``work`` off the event loop and render its result."""
    try:
        result = await in_thread(work, on_cancel=on_cancel)
    except CallRefused as exc:
        raise ToolError(exc.message) from None
    except DatabaseUnavailable as exc:  # a read outside any host call, given up on
        raise ToolError(str(exc)) from None
    return respond(result, markdown(result), response_format)


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


_QUOTED = 40  # characters of a bad file_mode quoted back: the schema lets a string of any length through


def parse_file_mode(value: int | str | None) -> int | None:
    """Modes are octal as people write them: 644, "644", "0644" and "0o644" all mean rw-r--r--."""
    if value is None:
        return None
    text = str(value).strip().lower().removeprefix("0o")
    if not text or len(text) > 4 or any(c not in "01234567" for c in text):
        given = str(value)
        shown = repr(value) if len(given) <= _QUOTED else f"{given[:_QUOTED]!r}... ({len(given)} characters)"
        raise ToolError(f'file_mode {shown} is not an octal mode such as "0644"')
    return int(text, 8)


def decoded(content: str | None, encoding: str) -> bytes | None:
    """An upload's inline ``content`` as bytes (``encoding`` is 'utf-8' or 'base64'); None without it."""
    if content is None:
        return None
    try:
        return base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
    except (binascii.Error, ValueError):
        raise ToolError("content is not valid base64") from None


# File content may hold any character; every other text argument ends up in an SQL lookup (which
# PostgreSQL refuses with a NUL in it), an SSH request or an SFTP path (cut at a NUL, or the
# link dropped), so a NUL there is refused before the tool runs.
_NUL_ALLOWED = frozenset({"content"})


def refusing_nul(tool: Callable[..., Awaitable[CallToolResult]]) -> Callable[..., Awaitable[CallToolResult]]:
    @functools.wraps(tool)
    async def checked(*args: Any, **kwargs: Any) -> CallToolResult:
        for name, value in kwargs.items():
            if name not in _NUL_ALLOWED and isinstance(value, str) and "\x00" in value:
                raise ToolError(f"{name} contains a NUL byte; remove it")
        return await tool(*args, **kwargs)

    return checked


class Tools:
    """The tool implementations, bound to a transport name for the audit log."""

    def __init__(self, transport: str, client: ClientRef | None) -> None:
        self.transport = transport
        self.client = client

    def caller(self, ctx: Context | None) -> Caller:
        caller = caller_for(ctx, self.transport, self.client)
        calllog.note_client(caller.client_name or caller.actor)
        return caller

    async def current_offer(self) -> Offer:
        """What the caller of the request being served may be shown (``mcp/visibility.py``)."""
        return await offer_for(caller_for(None, self.transport, self.client))

    # -- ssh_list_hosts ------------------------------------------------------------------------

    async def ssh_list_hosts(
        self,
        ctx: Context,
        tag: Annotated[str | None, Field(max_length=100, description="Only hosts with this tag.")] = None,
        search: Annotated[
            str | None, Field(max_length=200, description="Case-insensitive text to look for.")
        ] = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, HostList]:
        """List the SSH hosts you may use: name, address, port, username, tags, description, host key state
        and your open sessions on each. Use a host's name with ssh_connect or directly with ssh_execute."""
        caller = self.caller(ctx)

        def listing() -> HostList:
            access = access_for(own_client(caller))
            hosts = visible_hosts(access, list_hosts(tag=tag, search=search))
            open_by_host: dict[int, list[str]] = {}
            for session_id, host_id in (
                SshSession.objects.connected()
                .filter(client_id=caller.client_id, host__in=hosts)
                .values_list("session_id", "host_id")
            ):
                open_by_host.setdefault(host_id, []).append(session_id)
            infos = [
                HostInfo(
                    name=h.name,
                    address=h.address,
                    port=h.port,
                    username=h.username,
                    tags=h.tag_list,
                    description=h.description,
                    host_key_state=h.key_state,
                    open_sessions=open_by_host.get(h.pk, []),
                )
                for h in hosts
            ]
            note = "" if infos else empty_reason(access, filtered=bool(tag or search))
            return HostList(hosts=infos, count=len(infos), note=note)

        def work() -> HostList:
            # Read-only from start to end: a database that drops away is ridden out by running it again.
            return retrying(listing, "listing your hosts")

        return await serve(work, render.host_list, response_format)

    # -- ssh_connect ---------------------------------------------------------------------------

    async def ssh_connect(
        self,
        ctx: Context,
        host: Annotated[str, Field(min_length=1, max_length=100, description="A registered host name.")],
        session_id: Annotated[
            SessionIdArg, Field(description="Reuse this open session of the same host.")
        ] = None,
        address: Annotated[
            str | None, Field(max_length=255, description="Only for ad-hoc connections (off by default).")
        ] = None,
        port: Annotated[int, Field(ge=1, le=65535, description="Only for ad-hoc connections.")] = 22,
        username: Annotated[
            str | None, Field(max_length=100, description="Only for ad-hoc connections.")
        ] = None,
        password: Annotated[
            str | None, Field(max_length=1024, description="Only for ad-hoc connections.")
        ] = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, ConnectResult]:
        """Open an SSH session on a registered host by name and return its session_id (or reuse the open
        session you pass). Credentials and host keys are managed by the administrator; host keys are
        verified. address/username/password work only where ad-hoc connections are enabled for you."""
        caller = self.caller(ctx)
        adhoc = address is not None or username is not None or password is not None

        def work() -> ConnectResult:
            if adhoc:
                register_adhoc(caller, host, address or "", port, username or "", password or "")

            with host_call(
                "ssh_connect",
                caller,
                host_name=host,
                permission=Permission.CONNECT,
                details={"adhoc_registered": True} if adhoc else None,
            ) as call:
                if session_id:
                    row = SshSession.objects.filter(session_id=session_id, client_id=caller.client_id).first()
                    if row is None or row.host_id != call.host.pk:
                        call.fail(f"session {session_id!r} is not a session of host '{host}'")
                    connected = call.reuse(session_id)
                else:
                    connected = call.open_new()
                return ConnectResult(
                    session_id=connected.session_id,
                    host=call.host.name,
                    address=call.host.address,
                    port=call.host.port,
                    username=call.host.username,
                    host_key_fingerprint=connected.host_key_fingerprint,
                    reused=bool(session_id),
                    audit_id=call.complete(),
                )

        return await serve(work, render.connect, response_format)

    # -- ssh_status ----------------------------------------------------------------------------

    async def ssh_status(
        self,
        ctx: Context,
        session_id: SessionIdArg = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, StatusResult]:
        """Show your SSH sessions (or one session): host, state (connected, lost or closed), when opened
        and last used, and how many commands ran. Connected sessions held by this server are checked
        live."""
        caller = self.caller(ctx)

        def work() -> StatusResult:
            own = SshSession.objects.filter(client_id=caller.client_id)
            if session_id:
                rows = retrying(lambda: list(own.filter(session_id=session_id)), "reading your sessions")
                if not rows:
                    raise ToolError(f"unknown session_id {session_id!r}")
            else:
                rows = retrying(
                    lambda: list(own.exclude(state=SshSession.State.CLOSED)[:200]), "reading your sessions"
                )
            connected = [(r.session_id, r.worker) for r in rows if r.state == SshSession.State.CONNECTED]
            alive = get_dispatcher().alive(connected) if connected else {}
            for row in rows:
                if row.state == SshSession.State.CONNECTED and alive.get(row.session_id) is False:
                    SshSession.objects.filter(session_id=row.session_id).mark_lost(
                        "connection found dead by ssh_status"
                    )
                    row.state = SshSession.State.LOST
            infos = [
                SessionInfo(
                    session_id=r.session_id,
                    host=r.host_name,
                    state=r.state,  # type: ignore[arg-type]
                    opened_by=r.opened_by,
                    opened_at=_iso(r.opened_at),
                    last_used_at=_iso(r.last_used_at),
                    closed_at=_iso(r.closed_at) or None,
                    close_reason=r.close_reason,
                    commands_run=r.commands_run,
                )
                for r in rows
            ]
            return StatusResult(sessions=infos, count=len(infos))

        return await serve(work, render.status, response_format)

    # -- ssh_execute ---------------------------------------------------------------------------

    async def ssh_execute(
        self,
        ctx: Context,
        command: CommandArg,
        session_id: SessionIdArg = None,
        host: HostArg = None,
        working_directory: WorkingDirectoryArg = None,
        timeout: TimeoutArg = None,
        stdin: StdinArg = None,
        sudo: SudoArg = False,
        reason: ReasonArg = None,
        foreground_seconds: Annotated[
            float | None,
            Field(
                ge=0,
                description="Seconds to wait before a command still running goes on as a background job "
                "(default 50).",
            ),
        ] = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, ExecuteResult]:
        """Run a shell command on a host (session_id or host name): exit status, stdout, stderr (16 KiB
        each at most: first and last lines; a marker says how to read the rest). Killed at the timeout;
        stdin closed unless given. Needing approval: state 'pending', a request_id for
        ssh_approval_status. Still running after foreground_seconds: still_running and a job_id for
        ssh_job_status. Audited."""
        caller = self.caller(ctx)
        seconds = checked_timeout(timeout)
        foreground = foreground_limit(foreground_seconds)
        if any(ord(c) < 32 and c not in "\t\n\r" for c in command):
            # Rules would see text other than what the remote shell runs.
            raise ToolError("command contains a control character; remove it")
        for name, text in (("command", command), ("working_directory", working_directory or "")):
            if not settings.ALLOW_INVISIBLE_CHARACTERS and (hidden := visible.hidden_characters(text)):
                # An admin reading it (approvals, audit) could see a command other than the one that runs.
                raise ToolError(visible.refusal(name, hidden))
        call_id = new_job_id()  # also the job's id, should the command become one
        cancelled = threading.Event()
        notify, progress = self.notifiers(ctx)

        spec = CommandSpec(command, working_directory, seconds, stdin, sudo)

        def work() -> ExecuteResult:
            with host_call(
                "ssh_execute",
                caller,
                session_id=session_id,
                host_name=host,
                permission=Permission.EXECUTE,
                audit=AuditFields.of(spec),
                sudo=sudo,
            ) as call:
                approval = None
                if call.decision is not None and call.decision.verdict is Verdict.APPROVE:
                    approval = await_decision(call, spec, reason or "", notify, cancelled)
                    if approval.state == ApprovalRequest.State.PENDING:
                        return held_back(call, spec, approval)
                if approval is None and foreground < seconds:
                    return run_in_foreground(call, spec, caller, foreground, call_id, progress)
                executed = call.run_command(spec, call_id=call_id, progress=progress, approval=approval)
                return ExecuteResult.of(
                    call.session_id, call.host.name, command, executed.run, call.event_id, approval=approval
                )

        def on_cancel() -> None:
            cancelled.set()
            get_dispatcher().cancel(call_id)

        return await serve(work, render.execute, response_format, on_cancel=on_cancel)

    def notifiers(self, ctx: Context) -> tuple[Callable[[str], None], Callable[[int, int], None]]:
        """Progress callbacks usable from the call's thread: a message, and bytes of output so far."""
        loop = asyncio.get_running_loop()

        def notify(message: str) -> None:
            asyncio.run_coroutine_threadsafe(ctx.report_progress(0, None, message), loop)

        def progress(out_bytes: int, err_bytes: int) -> None:
            message = f"{out_bytes} bytes of stdout, {err_bytes} bytes of stderr so far"
            asyncio.run_coroutine_threadsafe(ctx.report_progress(out_bytes + err_bytes, None, message), loop)

        return notify, progress

    # -- ssh_approval_status -------------------------------------------------------------------

    async def ssh_approval_status(
        self,
        ctx: Context,
        request_id: Annotated[int, Field(ge=1, le=2**62, description="The id ssh_execute returned.")],
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, ApprovalStatusResult]:
        """Check a command that waits for an administrator's approval. When it was approved (and has not
        expired), this call runs the command, once, and returns its result; when it was denied, the
        administrator's comment says why. Nothing here can approve a request: only an administrator can."""
        caller = self.caller(ctx)
        call_id = secrets.token_hex(8)
        _notify, progress = self.notifiers(ctx)

        def work() -> ApprovalStatusResult:
            client_id = own_client(caller)
            request = retrying(
                lambda: approvals.get_for_client(request_id, client_id), "reading the approval request"
            )
            if request is None:
                raise ToolError(f"unknown approval request {request_id}")
            execution = batch_execution = None
            if request.state == ApprovalRequest.State.APPROVED and request.batch_id:
                outcome = run_approved_batch(caller, request, batch_progress, cancelled)
                batch_execution = fleet_tools.result_of(request.command, outcome)
                request.refresh_from_db()
            elif request.state == ApprovalRequest.State.APPROVED:
                execution = run_approved(caller, request, call_id, progress)
                request.refresh_from_db()
            return ApprovalStatusResult(
                request_id=request.pk,
                state=request.state,  # type: ignore[arg-type]
                host=request.host.name,
                command=request.command,
                requested_at=_iso(request.requested_at),
                expires_at=_iso(request.expires_at),
                decided_by=request.decided_by,
                comment=request.comment,
                executed_audit_id=request.executed_event_id,
                execution=execution,
                batch_hosts=request.covered_hosts if request.batch_id else [],
                batch_id=request.batch_id,
                batch_execution=batch_execution,
            )

        loop = asyncio.get_running_loop()
        cancelled = threading.Event()

        def batch_progress(done: int, total: int) -> None:
            message = f"{done} of {total} hosts done"
            asyncio.run_coroutine_threadsafe(ctx.report_progress(done, total, message), loop)

        def on_cancel() -> None:
            cancelled.set()
            get_dispatcher().cancel(call_id)

        return await serve(work, render.approval_status, response_format, on_cancel=on_cancel)

    # -- ssh_upload_file -----------------------------------------------------------------------

    async def ssh_upload_file(
        self,
        ctx: Context,
        remote_path: RemotePathArg,
        session_id: SessionIdArg = None,
        host: HostArg = None,
        local_path: LocalPathArg = None,
        content: ContentArg = None,
        content_encoding: ContentEncodingArg = "utf-8",
        file_mode: FileModeArg = None,
        overwrite: OverwriteArg = False,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, UploadResult]:
        """Upload a file to a host from inline content (utf-8 or base64) or from the server's transfer
        directory. Written to a temporary name and renamed into place; an existing file is kept unless
        overwrite is true. Returns the size and SHA-256."""
        caller = self.caller(ctx)
        if (local_path is None) == (content is None):
            raise ToolError("give exactly one of local_path or content")
        mode = parse_file_mode(file_mode)
        data = decoded(content, content_encoding)

        def work() -> UploadResult:
            try:
                # Refused early with a clear message; the task opens it again, just as fenced.
                located = localfiles.check_source(local_path) if local_path is not None else None
            except localfiles.LocalPathError as exc:
                raise ToolError(str(exc)) from None
            source = located.shown if located is not None else None

            upload = UploadSpec(
                remote_path,
                content=data,
                local_path=located.relative if located is not None else None,
                mode=mode,
                overwrite=overwrite,
            )
            with host_call(
                "ssh_upload_file",
                caller,
                session_id=session_id,
                host_name=host,
                permission=Permission.WRITE,
                audit=AuditFields(remote_path=remote_path, local_path=source or ""),
            ) as call:
                r = call.upload(upload)
                audit_id = call.complete(file_size=r.size, file_sha256=r.sha256)
                return UploadResult(
                    session_id=call.session_id,
                    host=call.host.name,
                    remote_path=r.remote_path,
                    bytes=r.size,
                    sha256=r.sha256,
                    audit_id=audit_id,
                )

        return await serve(work, render.upload, response_format)

    # -- ssh_download_file ---------------------------------------------------------------------

    async def ssh_download_file(
        self,
        ctx: Context,
        remote_path: RemotePathArg,
        session_id: SessionIdArg = None,
        host: HostArg = None,
        local_path: LocalPathArg = None,
        overwrite: Annotated[bool, Field(description="Replace an existing local file.")] = False,
        offset: Annotated[
            int, Field(ge=0, description="Inline only: the byte to start from (a next_offset from before).")
        ] = 0,
        length: Annotated[
            int | None,
            Field(ge=1, description="Inline only: bytes to read at most (capped at the output budget)."),
        ] = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, DownloadResult]:
        """Download a file from a host into the server's transfer directory (local_path) or inline (utf-8
        text when valid, else base64). Inline content is at most the output budget (16 KiB by default);
        a bigger file comes a page at a time: call again with offset=next_offset until next_offset is
        null. Returns the size and SHA-256."""
        caller = self.caller(ctx)
        if local_path is not None and (offset or length is not None):
            raise ToolError(
                "offset and length page an inline download; with local_path the whole file is written"
            )
        page_bytes = min(length or settings.OUTPUT_BUDGET_BYTES, settings.OUTPUT_BUDGET_BYTES)

        def work() -> DownloadResult:
            try:
                # Refused early with a clear message; the task opens it again, just as fenced.
                located = (
                    localfiles.check_destination(local_path, overwrite) if local_path is not None else None
                )
            except localfiles.LocalPathError as exc:
                raise ToolError(str(exc)) from None
            dest = located.shown if located is not None else None

            download = DownloadSpec(
                remote_path,
                local_path=located.relative if located is not None else None,
                overwrite=overwrite,
                max_inline_bytes=page_bytes if located is None else settings.MAX_INLINE_DOWNLOAD_BYTES,
                offset=offset,
            )
            with host_call(
                "ssh_download_file",
                caller,
                session_id=session_id,
                host_name=host,
                permission=Permission.READ,
                audit=AuditFields(remote_path=remote_path, local_path=dest or ""),
            ) as call:
                r = call.download(download)
                if r.content is None:
                    audit_id = call.complete(file_size=r.size, file_sha256=r.sha256)
                    return DownloadResult(
                        session_id=call.session_id,
                        host=call.host.name,
                        remote_path=r.remote_path,
                        bytes=r.size,
                        sha256=r.sha256,
                        local_path=dest,
                        content=None,
                        content_encoding=None,
                        audit_id=audit_id,
                    )
                # The holder hashed the bytes it read; check nothing was lost on the way.
                if hashlib.sha256(r.content).hexdigest() != r.sha256:
                    call.fail("downloaded content does not match its SHA-256; try again")
                file_size = r.file_size if r.file_size is not None else r.size
                page = file_page(r.content, r.offset, file_size, page_bytes)
                shown = Cleaned("")
                encoding: Literal["utf-8", "base64"]
                if page.text is not None:
                    # Text reaches the model cleaned like command output; base64 is not read as text.
                    shown = clean(hide_key_tail(page.text) if r.offset else page.text)
                    content, encoding = shown.text, "utf-8"
                else:
                    content, encoding = base64.b64encode(page.data).decode(), "base64"
                digest = hashlib.sha256(page.data).hexdigest()
                if page.next_offset is not None or r.offset:
                    call.details.update(offset=r.offset, file_size=file_size)
                audit_id = call.complete(file_size=len(page.data), file_sha256=digest)
                return DownloadResult(
                    session_id=call.session_id,
                    host=call.host.name,
                    remote_path=r.remote_path,
                    bytes=len(page.data),
                    sha256=digest,
                    local_path=None,
                    content=content,
                    content_encoding=encoding,
                    file_size=file_size,
                    offset=r.offset,
                    next_offset=page.next_offset,
                    audit_id=audit_id,
                    output_warnings=warnings_of("content", shown),
                    redactions=shown.redactions,
                )

        return await serve(work, render.download, response_format)

    # -- ssh_list_files ------------------------------------------------------------------------

    async def ssh_list_files(
        self,
        ctx: Context,
        session_id: SessionIdArg = None,
        host: HostArg = None,
        remote_path: Annotated[str, Field(min_length=1, max_length=4096)] = ".",
        show_hidden: Annotated[bool, Field(description="Include names starting with '.'.")] = False,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, ListFilesResult]:
        """List a directory on a host: name, type, size, mode, modification time and symlink target of each
        entry (relative paths start at the login directory). Long listings are capped and flagged."""
        caller = self.caller(ctx)

        def work() -> ListFilesResult:
            listing = ListSpec(remote_path, show_hidden=show_hidden, max_entries=settings.MAX_LIST_ENTRIES)
            with host_call(
                "ssh_list_files",
                caller,
                session_id=session_id,
                host_name=host,
                permission=Permission.READ,
                audit=AuditFields(remote_path=remote_path),
            ) as call:
                r = call.list_files(listing)
                call.details["entries"] = len(r.entries)
                audit_id = call.complete()
                return ListFilesResult(
                    session_id=call.session_id,
                    host=call.host.name,
                    path=r.path,
                    entries=[FileEntryInfo.model_validate(e, from_attributes=True) for e in r.entries],
                    truncated=r.truncated,
                    audit_id=audit_id,
                )

        return await serve(work, render.list_files, response_format)

    # -- ssh_disconnect ------------------------------------------------------------------------

    async def ssh_disconnect(
        self,
        ctx: Context,
        session_id: Annotated[str, Field(min_length=1, max_length=64, description="The session to close.")],
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, DisconnectResult]:
        """Close an SSH session opened with ssh_connect (or automatically by ssh_execute). Commands still
        running on it are ended by the server when the connection closes."""
        caller = self.caller(ctx)

        def work() -> DisconnectResult:
            with host_call(
                "ssh_disconnect", caller, session_id=session_id, permission=Permission.DISCONNECT
            ) as call:
                r = call.disconnect()
                return DisconnectResult(
                    session_id=session_id, host=call.host.name, was_open=r.was_open, audit_id=call.complete()
                )

        return await serve(work, render.disconnect, response_format)


def describe(fn: Callable[..., Any]) -> str:
    """A docstring as a tool description: no source indentation, wrapped lines joined."""
    paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def hints(read_only: bool, destructive: bool, idempotent: bool, open_world: bool) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


async def offer_for(caller: Caller) -> Offer:
    client_id = own_client(caller)
    # The fresh snapshot without a thread hop when this process has one (most calls).
    access = cached_access(client_id)
    if access is None:
        # Retried like every other lookup: a killed backend here failed the call unexplained
        # (tests/distributed/test_db_faults.py caught it on a loaded machine).
        access = await in_thread(lambda: retrying(lambda: access_for(client_id), "checking the grants"))
    return visibility.offer(access)


def offered_only(
    tools: Tools, name: str, tool: Callable[..., Awaitable[CallToolResult]]
) -> Callable[..., Awaitable[CallToolResult]]:
    """Refuse, and audit as denied, a call to a tool this caller's grants do not offer."""

    @functools.wraps(tool)
    async def checked(*args: Any, **kwargs: Any) -> CallToolResult:
        ctx = next((a for a in (*args, *kwargs.values()) if isinstance(a, Context)), None)
        caller = tools.caller(ctx)
        try:
            offer = await offer_for(caller)
        except DatabaseUnavailable as exc:  # nothing was done: say so, as the tools do
            raise ToolError(str(exc)) from None
        problem = visibility.refusal(name, caller.client_name or "?", offer)
        if problem:
            await in_thread(lambda: audit_refusal(caller, name, problem, kwargs))
            raise ToolError(problem)
        return await tool(*args, **kwargs)

    return checked


def audit_refusal(caller: Caller, tool: str, problem: str, arguments: dict[str, Any]) -> None:
    """The denied row of a refused call, with what it asked for, as ``host_call`` records a denial."""

    def text(name: str) -> str:
        value = arguments.get(name)
        return value if isinstance(value, str) else ""

    host = Host.objects.filter(name=text("host")).first() if text("host") else None
    with contextlib.suppress(CallRefused):  # the caller raises the refusal itself
        refuse(
            tool,
            caller,
            problem,
            host=host,
            session_id=text("session_id")[:64],
            audit=AuditFields(
                command=text("command"),
                working_directory=text("working_directory"),
                remote_path=text("remote_path"),
                local_path=text("local_path"),
            ),
            details={
                "tool_not_offered": True,
                **({"host_requested": text("host")[:100]} if text("host") else {}),
            },
        )


def register(server: MCPServer, transport: str, client: ClientRef | None) -> Tools:
    tools = Tools(transport, client)
    jobs = JobTools(tools)
    # (tool, title, read-only, destructive, idempotent, reaches the outside world)
    specs: list[tuple[Any, str, bool, bool, bool, bool]] = [
        (tools.ssh_list_hosts, "List SSH hosts", True, False, True, False),
        (tools.ssh_connect, "Open an SSH session", False, False, False, True),
        (tools.ssh_status, "SSH session status", True, False, True, False),
        (tools.ssh_execute, "Run a command over SSH", False, True, False, True),
        (tools.ssh_upload_file, "Upload a file over SFTP", False, True, True, True),
        (tools.ssh_download_file, "Download a file over SFTP", True, False, True, True),
        (tools.ssh_list_files, "List a remote directory", True, False, True, True),
        (tools.ssh_disconnect, "Close an SSH session", False, False, True, False),
        (tools.ssh_approval_status, "Check or run an approved command", False, True, False, True),
        (jobs.ssh_start_job, "Start a background job over SSH", False, True, False, True),
        (jobs.ssh_job_status, "Background job state and output", True, False, True, False),
        (jobs.ssh_cancel_job, "Cancel a background job", False, True, True, True),
        (jobs.ssh_list_jobs, "List background jobs", True, False, True, False),
        (jobs.ssh_read_output, "Page through kept output", True, False, True, False),
    ]
    for fn, title, *flags in specs:
        server.add_tool(
            observed(offered_only(tools, fn.__name__, refusing_nul(fn))),
            name=fn.__name__,
            title=title,
            description=describe(fn),
            annotations=hints(*flags),
        )
    fleet_tools.register(server, tools)
    fleet_file_tools.register(server, tools)
    from sshcontrol.mcp import copy_tools  # it builds on this module: imported once this one is loaded

    copy_tools.register(server, tools)
    return tools
