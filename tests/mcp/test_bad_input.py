"""Bad input over every tool (property-based): the server answers every call with a result or a
clear error, never a traceback or a leaked secret, leaves no audit row running, and keeps
serving. Calls reach the suite's real sshd through a registered host.

A clear error is the tool's own one line (arguments it quotes aside), or, for arguments that
fail the schema, the SDK's pydantic report of one block per field (see ``badinput.check_answer``).
After every example the server must still list hosts; after every test (the ``world``
fixture's teardown) it must still run ``echo ok``, hold no ``running`` audit row and no copy
of the host's password in the audit log.

The local client (a grant over every host) only ever runs ``echo`` of quoted text or a few
fixed harmless commands; fully arbitrary command text goes through a read-only client whose
allow-list admits nothing but ``echo`` without redirections.

The regression tests at the end pin bugs this file found (NUL bytes reaching SSH and SFTP, pathlib
errors escaping the local-path fence, downloads of FIFOs and devices that never ended).
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.types import CallToolResult

from audit.models import AuditEvent
from hosts.models import ApprovalRequest, Host, McpClient
from hosts.policy import normalise
from sshcontrol.localfiles import local_root
from tests.mcp.badinput import (
    ARBITRARY_COMMANDS,
    BAD,
    BASE64_JUNK,
    COMMAND_BAD,
    FILE_MODES_BAD,
    HOSTILE_SHORT_TEXT,
    MISSING,
    RESPONSE_FORMAT,
    SAFE_COMMANDS,
    TIMEOUTS,
    WRONG_TYPES,
    Arg,
    arguments,
    b64,
    check_answer,
    error_text,
    values,
    weighted,
)
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]

# Nothing but echo, and no `<` or `>`: arbitrary text can print, never write a file.
ECHO_ONLY = r"echo( [^<>]*)?"

# A hung call fails the property instead of the whole run.
CALL_SECONDS = 60.0

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

LOOP_LINK = "badinput-loop"


@dataclass
class World:
    """Everything the properties aim at: hosts, sessions, remote files, the local fence."""

    mcp: McpHarness
    ro: McpHarness
    sshd: SshServer
    host: Host
    session_id: str  # the local client's open session on "h"
    foreign_session_id: str  # the read-only client's: to the local client it does not exist
    remote_dir: str
    root: Path
    outside: Path  # a directory beside the transfer root that no call may touch
    victim: bytes
    ro_requests: tuple[int, int]  # the read-only client's approval requests: pending, approved

    def outside_untouched(self) -> None:
        assert sorted(p.name for p in self.outside.iterdir()) == ["victim"]
        assert (self.outside / "victim").read_bytes() == self.victim


def call(harness: McpHarness, tool: str, arguments: Mapping[str, Any]) -> CallToolResult:
    """One call through the real client; a hang or a protocol-level error fails the property."""
    future = harness.submit(tool, **arguments)
    try:
        result = future.result(CALL_SECONDS)
    except FutureTimeout:
        future.cancel()
        pytest.fail(f"{tool} did not answer within {CALL_SECONDS} s: {short(arguments)}")
    except Exception as exc:  # the property: every call gets a result, never a protocol error
        pytest.fail(f"{tool} raised {type(exc).__name__}: {exc} for {short(arguments)}")
    assert isinstance(result, CallToolResult)
    return result


def short(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (v[:80] + f"...({len(v)})" if isinstance(v, str) and len(v) > 80 else v)
        for k, v in arguments.items()
    }


def no_row_running() -> None:
    assert AuditEvent.objects.filter(status=AuditEvent.Status.RUNNING).count() == 0
    assert AuditEvent.objects.filter(finished_at__isnull=True).count() == 0


def answer(
    world: World, tool: str, arguments: Mapping[str, Any], harness: McpHarness | None = None
) -> CallToolResult:
    """Call, check the answer, and check the server still serves and left no row running."""
    server = harness or world.mcp
    result = call(server, tool, arguments)
    check_answer(result, tool, arguments, world.sshd.password)
    assert not server.call("ssh_list_hosts").is_error, "the server stopped serving"
    no_row_running()
    return result


def still_serving(world: World) -> None:
    """The end of every test: the server runs a real command, the audit log is complete and clean."""
    world.mcp.ok("ssh_list_hosts")
    done = world.mcp.ok("ssh_execute", host="h", command="echo ok")
    assert done["stdout"] == "ok\n" and done["exit_status"] == 0
    no_row_running()
    world.outside_untouched()
    recorded = AuditEvent.objects.values_list(
        "command", "stdout", "stderr", "error", "remote_path", "local_path", "details"
    )
    assert not any(world.sshd.password in str(row) for row in recorded), "the audit log holds the password"


# -- the world ---------------------------------------------------------------------------------


@pytest.fixture
def world(mcp: McpHarness, as_client: AsClient, make_host: Any, sshd: SshServer) -> Iterator[World]:
    host: Host = make_host("h")
    assert host.credential is not None
    host.credential.set_sudo_password(sshd.password)  # were sudo ever fed, the password must not show
    host.credential.save()
    make_host("off", enabled=False)
    make_host("fresh", trusted=False)
    ro = as_client("ro", hosts=[host], read_only=True, rules=[("allow", ECHO_ONLY)])

    remote = f"/tmp/sshc-badinput-{sshd.user}"
    made = mcp.ok(
        "ssh_execute",
        host="h",
        command=(
            f"rm -rf {remote} && mkdir -p {remote}/sub && printf 'hello\\n' > {remote}/f.txt"
            f" && printf '\\377\\376\\000\\200ok' > {remote}/bin && ln -s /etc {remote}/link"
        ),
    )
    assert made["exit_status"] == 0, made

    root = local_root()
    outside = root.parent / "badinput-outside"
    shutil.rmtree(outside, ignore_errors=True)
    outside.mkdir()
    victim = b"must never change\n"
    (outside / "victim").write_bytes(victim)
    (root / "badinput").mkdir(exist_ok=True)
    (root / "badinput" / "in.txt").write_text("local source\n")
    links = {
        "badinput-etc": "/etc",
        "badinput-passwd": "/etc/passwd",
        "badinput-out": str(outside),
        "badinput-victim": str(outside / "victim"),
        "badinput-up": "..",
        LOOP_LINK: LOOP_LINK,
    }
    for name, target in links.items():
        link = root / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)

    ro_client = McpClient.objects.get(name="ro")
    requests = tuple(
        ApprovalRequest.objects.create(
            client=ro_client,
            host=host,
            command=f"echo {state}",
            state=state,
            expires_at=timezone.now() + timedelta(hours=1),
            decided_by="test-suite" if state == ApprovalRequest.State.APPROVED else "",
        ).pk
        for state in (ApprovalRequest.State.PENDING, ApprovalRequest.State.APPROVED)
    )

    world = World(
        mcp=mcp,
        ro=ro,
        sshd=sshd,
        host=host,
        session_id=mcp.ok("ssh_connect", host="h")["session_id"],
        foreign_session_id=ro.ok("ssh_connect", host="h")["session_id"],
        remote_dir=remote,
        root=root,
        outside=outside,
        victim=victim,
        ro_requests=(requests[0], requests[1]),
    )
    yield world
    still_serving(world)  # after all the examples of the test
    for name in links:
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "badinput", ignore_errors=True)
    shutil.rmtree(outside, ignore_errors=True)
    mcp.call("ssh_execute", host="h", command=f"rm -rf {remote}")


# -- argument strategies -----------------------------------------------------------------------


def hosts() -> Arg:
    return Arg(
        weighted(
            (6, st.just("h")),
            (1, st.just(MISSING)),
            (1, values("off", "fresh", "nope", "H", "h ", " h", "h\x00", "", "x" * 100, "%", "_")),
            (1, HOSTILE_SHORT_TEXT),
        )
    )


def sessions(world: World, weight_missing: int = 5) -> Arg:
    return Arg(
        weighted(
            (weight_missing, st.just(MISSING)),
            (2, st.just(world.session_id)),
            (1, st.just(world.foreign_session_id)),
            (1, values("h-000000000000", "", "x" * 64, "\x00", "../" * 20, "h-" + "0" * 62)),
            (1, HOSTILE_SHORT_TEXT),
        )
    )


FORMAT = Arg(RESPONSE_FORMAT)
FLAG = Arg(
    weighted((2, st.just(MISSING)), (2, st.booleans())), values("yes", "maybe", 2, -1, "", [], {}, 0.5)
)


def optional(strategy: st.SearchStrategy[Any], weight_missing: int = 2) -> st.SearchStrategy[Any]:
    return weighted((weight_missing, st.just(MISSING)), (1, strategy))


def inside_root(world: World, raw: str) -> bool:
    """Where a local path really lands, worked out here independently of the server."""
    resolved = Path(os.path.realpath(world.root / os.path.expanduser(raw)))
    return world.root in resolved.parents


def local_paths(world: World, *extra: str, writes: bool) -> st.SearchStrategy[Any]:
    """Paths in, around and out of the transfer root (symlinks out of it included).

    Paths to write to (downloads) only ever escape towards ``world.outside``, which the tests
    watch: were the fence ever broken, no download may land on a real system file.
    """
    outside = world.outside.name
    escapes_to_read = (
        "~",
        "~/x",
        "~root/x",
        "../../etc/passwd",
        "/etc/passwd",
        "badinput-etc/passwd",
        "badinput-passwd",
    )
    paths = values(
        "badinput",
        "badinput/missing",
        "badinput/missing-dir/x",
        ".",
        "",
        "\x00",
        "badinput/a\x00b",
        f"../{outside}/victim",
        str(world.outside / "victim"),
        str(world.outside / "new"),
        "badinput-out/new",
        "badinput-out/victim",
        "badinput-victim",
        "badinput-up/x",
        f"badinput-up/{outside}/new",
        f"badinput/../../{outside}/new",
        "x/" * 1000,
        LOOP_LINK,
        f"{LOOP_LINK}/x",
        "~nosuchuser-badinput/x",
        "x" * 300,
        *(() if writes else escapes_to_read),
        *extra,
    )
    hostile = HOSTILE_SHORT_TEXT.map(lambda text: text.lstrip("/~")) if writes else HOSTILE_SHORT_TEXT
    return weighted((3, paths), (1, hostile))


def remote_reads(world: World) -> st.SearchStrategy[Any]:
    """Remote paths to read: files, a directory, symlinks, traversal, NULs, the unreadable.

    Never a FIFO or an endless device: their refusal has its own tests below.
    """
    d = world.remote_dir
    return st.one_of(
        values(
            f"{d}/f.txt",
            f"{d}/bin",
            d,
            f"{d}/sub",
            f"{d}/link",
            f"{d}/link/hostname",
            f"{d}/../{Path(d).name}/f.txt",
            f"{d}/missing",
            "/etc/hostname",
            "/etc/shadow",
            "/root/x",
            "../../../../../etc/hostname",
            ".",
            "~",
            "/",
            "/dev/null",
            "/proc/self/status",
            f"{d}/a\x00b",
            "/etc/hostname\x00",
            "x" * 300,
            f"{d}/" + "x/" * 2000,
        ),
        HOSTILE_SHORT_TEXT,
    )


REMOTE_PATH_BAD = st.one_of(WRONG_TYPES, st.just(MISSING), values("", "x" * 4097, "/tmp/" + "y" * 5000))


def execute_spec(world: World, commands: st.SearchStrategy[Any]) -> dict[str, Arg]:
    d = world.remote_dir
    return {
        "command": Arg(commands, COMMAND_BAD),
        "host": hosts(),
        "session_id": sessions(world, 1),
        "working_directory": Arg(
            optional(
                st.one_of(
                    values(
                        d, "/", "/nonexistent", "~", f"{d}/dir with spaces; id", "$(id)", "..", f"{d}\x00x"
                    ),
                    HOSTILE_SHORT_TEXT,
                ),
                weight_missing=4,
            )
        ),
        "timeout": Arg(optional(values(1e-9, 0.001, 1, 5, 3600, None), 3), weighted((3, TIMEOUTS), (1, BAD))),
        "stdin": Arg(optional(st.one_of(st.text(max_size=50), values("\x00\xff", "x" * 1_000_000)), 4)),
        "sudo": Arg(optional(st.booleans(), 4), values("yes", 2, "maybe", None, [])),
        "reason": Arg(optional(HOSTILE_SHORT_TEXT, 4)),
        "response_format": FORMAT,
    }


# -- per-tool facts beyond the common property -------------------------------------------------


def echoed(command: Any) -> str | None:
    """The text ``echo <quoted text>`` must print, where it is unambiguous."""
    if not isinstance(command, str) or not command.startswith("echo "):
        return None
    try:
        words = shlex.split(command[5:])
    except ValueError:
        return None
    if len(words) != 1 or command[5:] != shlex.quote(words[0]):
        return None
    text = words[0]
    return None if "\\" in text or text.startswith("-") else text + "\n"


def foreign_session_stays_foreign(world: World, arguments: Mapping[str, Any], result: CallToolResult) -> None:
    if arguments.get("session_id") == world.foreign_session_id:
        assert result.is_error, "the local client used the read-only client's session"


# -- the properties ----------------------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_list_hosts_and_status_answer_any_arguments(world: World, data: st.DataObject) -> None:
    text = st.one_of(values("h", "", "%", "_", "\x00", "x" * 100, "x" * 201), HOSTILE_SHORT_TEXT)
    listed = data.draw(
        arguments({"tag": Arg(optional(text)), "search": Arg(optional(text)), "response_format": FORMAT})
    )
    result = answer(world, "ssh_list_hosts", listed)
    status = data.draw(arguments({"session_id": sessions(world, 2), "response_format": FORMAT}))
    result = answer(world, "ssh_status", status)
    foreign_session_stays_foreign(world, status, result)


@PROPERTY
@given(data=st.data())
def test_connect_answers_any_arguments(world: World, data: st.DataObject) -> None:
    sshd = world.sshd
    spec = {
        "host": hosts(),
        "session_id": sessions(world),
        "address": Arg(
            optional(st.one_of(values("127.0.0.1", sshd.address, "::1", ""), HOSTILE_SHORT_TEXT), 6)
        ),
        "port": Arg(
            optional(values(1, 22, 65535, sshd.port), 4), values(0, -1, 65536, 2**70, "22", 22.5, None)
        ),
        "username": Arg(optional(st.one_of(values(sshd.user, "root", ""), HOSTILE_SHORT_TEXT), 6)),
        # The real password, where the call must refuse it without ever echoing it.
        "password": Arg(
            weighted((6, st.just(MISSING)), (2, st.just(sshd.password)), (1, HOSTILE_SHORT_TEXT))
        ),
        "response_format": FORMAT,
    }
    drawn = data.draw(arguments(spec))
    result = answer(world, "ssh_connect", drawn)
    foreign_session_stays_foreign(world, drawn, result)
    if not result.is_error:
        opened = result.structured_content
        assert opened is not None and opened["host"] == "h"
        if not opened["reused"]:
            world.mcp.ok("ssh_disconnect", session_id=opened["session_id"])


@PROPERTY
@given(data=st.data())
def test_execute_answers_any_arguments(world: World, data: st.DataObject) -> None:
    drawn = data.draw(arguments(execute_spec(world, SAFE_COMMANDS), exclusive=[("host", "session_id")]))
    result = answer(world, "ssh_execute", drawn)
    foreign_session_stays_foreign(world, drawn, result)
    if not result.is_error:
        ran = result.structured_content
        assert ran is not None
        expected = echoed(drawn.get("command"))
        if expected is not None and ran["exit_status"] == 0 and not ran["stdout_truncated"]:
            assert ran["stdout"] == expected


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_a_read_only_client_answers_arbitrary_commands(world: World, data: st.DataObject) -> None:
    spec = execute_spec(world, ARBITRARY_COMMANDS)
    # For this client its own session is the one to use, and the local client's is foreign.
    spec["session_id"] = Arg(
        weighted(
            (1, st.just(MISSING)),
            (2, st.just(world.foreign_session_id)),
            (1, st.just(world.session_id)),
            (1, HOSTILE_SHORT_TEXT),
        )
    )
    drawn = data.draw(arguments(spec, exclusive=[("host", "session_id")]))
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    result = answer(world, "ssh_execute", drawn, harness=world.ro)
    command = drawn.get("command")
    if not result.is_error:
        assert isinstance(command, str) and normalise(command).startswith("echo"), command
        assert drawn.get("session_id") != world.session_id, "the read-only client used another's session"
    elif "is not on the allow-list" in error_text(result):
        refused = AuditEvent.objects.filter(id__gt=before, tool="ssh_execute").get()
        assert refused.status == AuditEvent.Status.DENIED and refused.finished_at is not None


@settings(PROPERTY, max_examples=50)
@given(data=st.data())
def test_upload_answers_any_arguments(world: World, data: st.DataObject) -> None:
    d = world.remote_dir
    remote = st.one_of(
        values(
            f"{d}/up.txt",
            f"{d}/f.txt",
            f"{d}/sub",
            f"{d}/sub/",
            f"{d}/link/passwd",
            f"{d}/../{Path(d).name}/up2.txt",
            "/etc/passwd",
            "/nonexistent/x",
            "/dev/null",
            f"{d}/a\x00b",
            f"{d}/x\x00",
            f"{d}/" + "x" * 300,
            f"{d}/" + "x/" * 2000,
        ),
        # Arbitrary names, but only directly inside the test's remote directory.
        st.text(max_size=30).map(lambda t: f"{d}/{t.replace('/', '_')}"),
    )
    spec = {
        "remote_path": Arg(remote, REMOTE_PATH_BAD),
        "host": hosts(),
        "session_id": sessions(world, 1),
        "local_path": Arg(
            weighted(
                (1, st.just(MISSING)),
                (2, values("badinput/in.txt", str(world.root / "badinput/in.txt"))),
                (3, local_paths(world, writes=False)),
            )
        ),
        "content": Arg(
            weighted(
                (1, st.just(MISSING)),
                (3, st.text(max_size=100)),
                (1, st.binary(max_size=64).map(b64)),
                (1, BASE64_JUNK),
                (1, values("x" * 2_000_000)),
            )
        ),
        "content_encoding": Arg(
            optional(values("utf-8", "base64"), 3),
            st.one_of(values("UTF-8", "utf8", "", "base64\n", " utf-8"), BAD),
        ),
        "file_mode": Arg(
            optional(values(None, 644, "0644", "0o600", "755", 0, "0", 511, "0777"), 3),
            st.one_of(FILE_MODES_BAD, BAD),
        ),
        "overwrite": FLAG,
        "response_format": FORMAT,
    }
    drawn = data.draw(arguments(spec, [("host", "session_id"), ("content", "local_path")]))
    result = answer(world, "ssh_upload_file", drawn)
    foreign_session_stays_foreign(world, drawn, result)
    local = drawn.get("local_path")
    if not result.is_error and local is not None:
        assert inside_root(world, local), f"uploaded from outside the transfer directory: {local!r}"
    world.outside_untouched()


@settings(PROPERTY, max_examples=50)
@given(data=st.data())
def test_download_answers_any_arguments(world: World, data: st.DataObject) -> None:
    spec = {
        "remote_path": Arg(remote_reads(world), REMOTE_PATH_BAD),
        "host": hosts(),
        "session_id": sessions(world, 1),
        "local_path": Arg(
            weighted(
                (4, st.just(MISSING)),
                (
                    3,
                    local_paths(world, "badinput/out.bin", str(world.root / "badinput/abs.bin"), writes=True),
                ),
            )
        ),
        "overwrite": FLAG,
        "response_format": FORMAT,
    }
    drawn = data.draw(arguments(spec, exclusive=[("host", "session_id")]))
    result = answer(world, "ssh_download_file", drawn)
    foreign_session_stays_foreign(world, drawn, result)
    if not result.is_error:
        got = result.structured_content
        assert got is not None
        local = drawn.get("local_path")
        if local is not None:
            assert inside_root(world, local), f"downloaded outside the transfer directory: {local!r}"
            assert got["local_path"] is not None and inside_root(world, got["local_path"])
        elif got["remote_path"].endswith("/bin"):
            assert got["content_encoding"] == "base64"
    world.outside_untouched()


@settings(PROPERTY, max_examples=40)
@given(data=st.data())
def test_local_paths_never_leave_the_transfer_root(world: World, data: st.DataObject) -> None:
    """The fence alone: every other argument valid, the local path hostile, both directions."""
    overwrite = data.draw(st.booleans())
    if data.draw(st.booleans()):
        tool = "ssh_upload_file"
        local = data.draw(local_paths(world, "badinput/in.txt", writes=False))
        drawn = {"host": "h", "remote_path": f"{world.remote_dir}/fenced", "local_path": local}
    else:
        tool = "ssh_download_file"
        local = data.draw(local_paths(world, "badinput/out.bin", writes=True))
        drawn = {"host": "h", "remote_path": f"{world.remote_dir}/f.txt", "local_path": local}
    result = answer(world, tool, {**drawn, "overwrite": overwrite})
    if not result.is_error:
        assert inside_root(world, local), f"{tool} used {local!r}, outside the transfer directory"
    world.outside_untouched()


@PROPERTY
@given(data=st.data())
def test_list_files_answers_any_arguments(world: World, data: st.DataObject) -> None:
    spec = {
        "remote_path": Arg(optional(remote_reads(world), 1), REMOTE_PATH_BAD),
        "host": hosts(),
        "session_id": sessions(world, 1),
        "show_hidden": FLAG,
        "response_format": FORMAT,
    }
    drawn = data.draw(arguments(spec, exclusive=[("host", "session_id")]))
    result = answer(world, "ssh_list_files", drawn)
    foreign_session_stays_foreign(world, drawn, result)


@settings(PROPERTY, max_examples=30)
@given(data=st.data())
def test_disconnect_answers_any_arguments(world: World, data: st.DataObject) -> None:
    spec = {
        "session_id": Arg(
            sessions(world, weight_missing=0).good, st.one_of(WRONG_TYPES, st.just(MISSING), values(""))
        ),
        "response_format": FORMAT,
    }
    drawn = data.draw(arguments(spec))
    result = answer(world, "ssh_disconnect", drawn)
    foreign_session_stays_foreign(world, drawn, result)


@settings(PROPERTY, max_examples=30)
@given(data=st.data())
def test_approval_status_answers_any_arguments(world: World, data: st.DataObject) -> None:
    theirs = values(*world.ro_requests)
    spec = {
        "request_id": Arg(
            st.one_of(theirs, st.integers(1, 2**62), values(1, 2**62)),
            st.one_of(values(0, -1, 2**62 + 1, 2**63, 2**64, 10**100, "1", 1.5, True, None, [], ""), BAD),
        ),
        "response_format": FORMAT,
    }
    drawn = data.draw(arguments(spec))
    as_owner = data.draw(st.booleans())
    result = answer(world, "ssh_approval_status", drawn, harness=world.ro if as_owner else None)
    if not result.is_error:
        status = result.structured_content
        assert status is not None
        assert as_owner and status["request_id"] in world.ro_requests, "answered to a client not its owner"
        if status["execution"] is not None:
            assert status["execution"]["stdout"] == "approved\n"
    elif as_owner and "validation error" not in error_text(result):
        asked = drawn.get("request_id")
        # The owner's own requests always answer (the approved one runs once, then is "executed").
        assert not (type(asked) is int and asked in world.ro_requests), error_text(result)


def test_approval_requests_answer_only_their_owner(world: World) -> None:
    pending, approved = world.ro_requests
    for request_id in world.ro_requests:
        assert f"unknown approval request {request_id}" in world.mcp.error(
            "ssh_approval_status", request_id=request_id
        )
    ran = world.ro.ok("ssh_approval_status", request_id=approved)
    assert ran["execution"]["stdout"] == "approved\n" and ran["state"] == "executed"
    again = world.ro.ok("ssh_approval_status", request_id=approved)
    assert again["execution"] is None and again["state"] == "executed"
    assert world.ro.ok("ssh_approval_status", request_id=pending)["state"] == "pending"


def test_junk_of_every_shape_for_every_tool(world: World) -> None:
    """A hostile burst: every tool with junk arguments, back to back, then a real command."""
    for tool in (
        "ssh_list_hosts",
        "ssh_connect",
        "ssh_status",
        "ssh_execute",
        "ssh_upload_file",
        "ssh_download_file",
        "ssh_list_files",
        "ssh_disconnect",
        "ssh_approval_status",
        "ssh_execute_many",
        "ssh_copy",
        "ssh_copy_many",
        "ssh_upload_many",
        "ssh_download_many",
    ):
        for junk in ({"": None}, {"session_id": {"$gt": ""}}, {"host": ["h"], "command": ["echo"]}):
            answer(world, tool, junk)


# -- outputs that are not UTF-8 ----------------------------------------------------------------


def test_invalid_utf8_in_command_output_is_a_result_with_replacement_characters(world: World) -> None:
    result = world.mcp.ok("ssh_execute", host="h", command="printf '\\377\\376ok'; printf '\\200' >&2")
    assert result["exit_status"] == 0
    assert result["stdout"] == "\ufffd\ufffdok" and result["stdout_bytes"] == 4
    assert result["stderr"] == "\ufffd" and result["stderr_bytes"] == 1
    as_json = world.mcp.call("ssh_execute", host="h", command="printf '\\377\\376ok'", response_format="json")
    check_answer(as_json, "ssh_execute", {}, world.sshd.password)
    assert not as_json.is_error


def test_a_binary_download_comes_back_as_base64(world: World) -> None:
    result = world.mcp.ok("ssh_download_file", host="h", remote_path=f"{world.remote_dir}/bin")
    assert result["content_encoding"] == "base64"
    assert base64.b64decode(result["content"]) == b"\xff\xfe\x00\x80ok"
    assert result["bytes"] == 6
    text = world.mcp.ok("ssh_download_file", host="h", remote_path=f"{world.remote_dir}/f.txt")
    assert text["content_encoding"] == "utf-8" and text["content"] == "hello\n"


# Escapes towards the watched directory beside the root, tried both ways.
ESCAPES_TO_OUTSIDE = [
    "badinput-out/victim",
    "badinput-victim",
    "badinput-up/badinput-outside/victim",
    "badinput/../../badinput-outside/victim",
    "../badinput-outside/victim",
]
# Escapes towards real system files: only ever read (uploaded from), never written to.
ESCAPES_TO_SYSTEM = ["../../etc/passwd", "/etc/passwd", "badinput-etc/passwd", "badinput-passwd", "~/x"]


@pytest.mark.parametrize("local_path", ESCAPES_TO_OUTSIDE + ESCAPES_TO_SYSTEM)
def test_symlinks_and_traversal_out_of_the_local_root_are_refused(world: World, local_path: str) -> None:
    up = world.mcp.error(
        "ssh_upload_file", host="h", remote_path=f"{world.remote_dir}/u", local_path=local_path
    )
    assert "outside the transfer directory" in up
    listing = world.mcp.ok("ssh_list_files", host="h", remote_path=world.remote_dir)
    assert "u" not in {entry["name"] for entry in listing["entries"]}
    if local_path in ESCAPES_TO_OUTSIDE:
        down = world.mcp.error(
            "ssh_download_file",
            host="h",
            remote_path=f"{world.remote_dir}/f.txt",
            local_path=local_path,
            overwrite=True,
        )
        assert "outside the transfer directory" in down
    world.outside_untouched()


# -- regressions: bugs these properties found ----------------------------------------------------


def test_it_refuses_a_nul_in_the_working_directory_without_dropping_the_connection(world: World) -> None:
    """Regression: a NUL in working_directory reached the SSH exec request and sshd dropped the link.

    ``ssh_execute`` refuses NUL in ``command`` but not in ``working_directory``: the answer is
    "the server refused to run the command: EOFError", and every other command running on the
    same session dies with "the SSH connection was lost while the command ran".
    """
    world.mcp.ok("ssh_execute", host="h", command="true")
    slow: Future[CallToolResult] = world.mcp.submit("ssh_execute", host="h", command="sleep 2; echo done")
    wait_until(lambda: world.sshd.user_processes("sleep 2"), 10, "the slow command is running")
    message = world.mcp.error("ssh_execute", host="h", command="pwd", working_directory="/tmp\x00/x")
    other = slow.result(30)
    assert not other.is_error, (
        f"a NUL in another call's working_directory killed this command: {error_text(other)}"
    )
    assert "nul" in message.lower(), message


def test_it_refuses_a_nul_in_a_remote_path(world: World) -> None:
    """Regression: a NUL in ``remote_path`` went to sftp-server as is.

    A NUL inside the path kills the SFTP channel and the answer wrongly says "the SSH connection
    was lost during the SFTP operation"; a trailing NUL is dropped by sftp-server, so
    ``/etc/hostname\\x00`` downloads ``/etc/hostname`` while the result and the audit row name
    another path (the audit row shows ``/etc/hostname\\ufffd``).
    """
    d = world.remote_dir
    for tool, extra in (
        ("ssh_upload_file", {"content": "x"}),
        ("ssh_download_file", {}),
        ("ssh_list_files", {}),
    ):
        message = world.mcp.error(tool, host="h", remote_path=f"{d}/a\x00b", **extra)
        assert "connection was lost" not in message and "nul" in message.lower(), message
    trailing = world.mcp.call("ssh_download_file", host="h", remote_path="/etc/hostname\x00")
    assert trailing.is_error, "a NUL-terminated path was read as another path"


@pytest.mark.parametrize(
    "local_path",
    [LOOP_LINK, f"{LOOP_LINK}/x", "~nosuchuser-badinput/x", "x" * 300, "💥" * 70],
    ids=["symlink-loop", "inside-symlink-loop", "unknown-user-home", "long-name", "long-utf8-name"],
)
def test_it_answers_unresolvable_local_paths_with_a_clear_error(world: World, local_path: str) -> None:
    """Regression: ``localfiles`` let RuntimeError / OSError out of pathlib.

    A symlink loop inside the transfer root (``Path.resolve`` raises RuntimeError), ``~user`` of
    an unknown user (``Path.expanduser`` raises RuntimeError) and a name over 255 bytes
    (``Path.exists`` / ``is_dir`` raise ENAMETOOLONG) crash the tool: the client gets the bare
    "Error executing tool ssh_upload_file" and the server logs a traceback.
    """
    for tool, extra in (("ssh_upload_file", {}), ("ssh_download_file", {"overwrite": True})):
        result = world.mcp.call(
            tool, host="h", remote_path=f"{world.remote_dir}/f.txt", local_path=local_path, **extra
        )
        assert result.is_error
        check_answer(result, tool, {"local_path": local_path}, world.sshd.password)


def stop_sessions() -> None:
    from sshlib.sessions import registry

    registry.close_all()


def test_it_refuses_to_download_a_fifo(world: World) -> None:
    """Regression: downloading a FIFO blocked in sftp-server's open for ever.

    The file tools have no timeout and no cancellation: only closing the session ends the call.
    ``_stat_file`` could refuse anything that is not a regular file before opening it.
    """
    world.mcp.ok("ssh_execute", host="h", command=f"mkfifo {world.remote_dir}/fifo")
    pending = world.mcp.submit("ssh_download_file", host="h", remote_path=f"{world.remote_dir}/fifo")
    try:
        result = pending.result(10)
    except FutureTimeout:
        pytest.fail("ssh_download_file of a FIFO did not answer within 10 s")
    finally:
        stop_sessions()  # unblocks the worker thread
    assert result.is_error


def test_it_refuses_to_download_an_endless_device(world: World) -> None:
    """Regression: ``/dev/zero`` downloaded to a local_path was written without any limit.

    Nothing caps a download to a file and the client cannot cancel it: it runs until the disk is
    full or the session is closed. Inline downloads are capped (MAX_INLINE_DOWNLOAD_BYTES).
    """
    pending = world.mcp.submit(
        "ssh_download_file", host="h", remote_path="/dev/zero", local_path="badinput/zero"
    )
    limit = 64 << 20
    written = 0
    try:
        deadline = time.monotonic() + 10
        while not pending.done() and time.monotonic() < deadline and written < limit:
            time.sleep(0.2)
            written = sum(p.stat().st_size for p in (world.root / "badinput").glob(".zero*"))
        answered = pending.done()
    finally:
        stop_sessions()  # ends the download if it still runs
    assert answered, f"still downloading /dev/zero after writing {written} bytes"
    assert pending.result(0).is_error and written < limit
