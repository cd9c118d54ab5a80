"""The argument types the MCP tools share: type, bounds and description in one place.

Each is an ``Annotated`` type whose ``Field`` becomes the argument's JSON schema in
``tools/list``. Where one tool words an argument differently, it narrows the shared type with
its own ``Field(description=...)`` (pydantic merges the two), so the bounds stay here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sshcontrol import fleet
from sshcontrol.mcp.schemas import ResponseFormat

# -- every tool ------------------------------------------------------------------------------

FormatArg = Annotated[
    ResponseFormat,
    Field(description="'markdown' (readable text, default) or 'json' (the same data as JSON)."),
]

# -- one host --------------------------------------------------------------------------------

SessionIdArg = Annotated[str | None, Field(max_length=64, description="A session id from ssh_connect.")]
HostArg = Annotated[
    str | None,
    Field(
        max_length=100,
        description="A registered host name (instead of session_id); "
        "a session is opened or reused automatically.",
    ),
]
RemotePathArg = Annotated[str, Field(min_length=1, max_length=4096, description="Path on the remote host.")]
LocalPathArg = Annotated[
    str | None,
    Field(
        max_length=4096,
        description="Path inside the server's transfer directory "
        "(SSHCONTROL_LOCAL_ROOT); relative paths are taken from there.",
    ),
]

# -- commands --------------------------------------------------------------------------------

CommandArg = Annotated[str, Field(min_length=1, max_length=100_000, description="Shell command line to run.")]
WorkingDirectoryArg = Annotated[
    str | None, Field(max_length=4096, description="Directory to run in (quoted safely).")
]
TimeoutArg = Annotated[
    float | None, Field(gt=0, description="Seconds before the command is killed (default 60).")
]
StdinArg = Annotated[str | None, Field(max_length=10_000_000, description="Text fed to the command's stdin.")]
SudoArg = Annotated[bool, Field(description="Run as root with sudo (only where an administrator allows it).")]
ReasonArg = Annotated[
    str | None,
    Field(max_length=2000, description="Why you need this; shown to the admin if it needs approval."),
]

# -- uploads ---------------------------------------------------------------------------------

ContentArg = Annotated[
    str | None, Field(max_length=50_000_000, description="File content (instead of local_path).")
]
ContentEncodingArg = Annotated[str, Field(pattern="^(utf-8|base64)$", description="'utf-8' or 'base64'.")]
FileModeArg = Annotated[int | str | None, Field(description='Octal permissions, e.g. "0644" or 644.')]
OverwriteArg = Annotated[bool, Field(description="Replace an existing remote file.")]

# -- many hosts ------------------------------------------------------------------------------

HostNameItem = Annotated[str, Field(min_length=1, max_length=100)]
HostsArg = Annotated[
    list[HostNameItem] | None,
    Field(max_length=fleet.MAX_HOSTS, description="Registered host names (instead of tag)."),
]
TagArg = Annotated[
    str | None, Field(max_length=100, description="Every host with this tag you may use (instead of hosts).")
]
ParallelArg = Annotated[int, Field(ge=1, le=fleet.POOL_THREADS, description="Hosts at once (default 50).")]
BatchSizeArg = Annotated[
    int | None,
    Field(ge=1, description="Run in consecutive batches of this many hosts; the first is the canary."),
]
StopArg = Annotated[
    int | None,
    Field(ge=1, description="Once this many hosts failed, start no further batch; the rest are skipped."),
]
BatchReasonArg = Annotated[
    str | None, Field(max_length=2000, description="Why you need this; recorded with each host's audit row.")
]
BatchFormatArg = Annotated[
    ResponseFormat, Field(description="'markdown' (readable text, default) or 'json'.")
]
