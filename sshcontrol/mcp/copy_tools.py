"""``ssh_copy``: a file from one host to another, never through the server's disk.

Each end is its own audited call (``host_call``): the source authorized for reading, the
destination for writing, both rows opened before anything is copied and both completed
with the size and SHA-256 of the bytes that moved (each row names the other end). The bytes
stream from the source's SFTP read into the destination's SFTP write in the process holding
the sessions (``sshcontrol/copying.py``).

Registered by ``tools.register``; offered to callers that may read and write files somewhere
(``mcp/visibility.py``). Copying to many hosts at once (by names or tag) waits for the fleet
machinery of ``ssh_execute_many`` (not built yet).
"""

from __future__ import annotations

from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from hosts.access import Permission
from sshcontrol import copying
from sshcontrol.calllog import observed
from sshcontrol.hostcall import AuditFields, host_call
from sshcontrol.mcp.tools import (
    FormatArg,
    Tools,
    describe,
    hints,
    offered_only,
    parse_file_mode,
    refusing_nul,
    serve,
)
from sshcontrol.taskspec import DispatchError

PathArg = Annotated[str, Field(min_length=1, max_length=4096)]
SessionArg = Annotated[str | None, Field(max_length=64)]
HostNameArg = Annotated[str | None, Field(max_length=100)]


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


def register(server: MCPServer, tools: Tools) -> None:
    async def ssh_copy(
        ctx: Context,
        from_path: Annotated[PathArg, Field(description="The file to copy, on the source host.")],
        to_path: Annotated[PathArg, Field(description="Where to write it on the destination host.")],
        from_session_id: Annotated[SessionArg, Field(description="The source: a session id.")] = None,
        from_host: Annotated[HostNameArg, Field(description="The source: a host name (instead).")] = None,
        to_session_id: Annotated[SessionArg, Field(description="The destination: a session id.")] = None,
        to_host: Annotated[HostNameArg, Field(description="The destination: a host name (instead).")] = None,
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
        if not copying.available():
            raise ToolError(copying.UNAVAILABLE)
        _one_of(from_session_id, from_host, "from")
        _one_of(to_session_id, to_host, "to")
        mode = parse_file_mode(file_mode)

        def work() -> CopyResult:
            with (
                host_call(
                    "ssh_copy",
                    caller,
                    session_id=from_session_id,
                    host_name=from_host,
                    permission=Permission.READ,
                    audit=AuditFields(remote_path=from_path),
                    details={"copy_end": "source"},
                ) as source,
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
                spec = copying.CopySpec(from_path, to_path, overwrite=overwrite, mode=mode)
                try:
                    done = copying.run(source.session_id, dest.session_id, spec)
                except DispatchError as exc:
                    # The destination's row first; the source's is completed by its own block.
                    dest.fail(exc.message)
                if done.reconnected:
                    source.details["reconnected"] = dest.details["reconnected"] = True
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

    server.add_tool(
        observed(offered_only(tools, "ssh_copy", refusing_nul(ssh_copy))),
        name="ssh_copy",
        title="Copy a file between hosts",
        description=describe(ssh_copy),
        annotations=hints(read_only=False, destructive=True, idempotent=True, open_world=True),
    )
