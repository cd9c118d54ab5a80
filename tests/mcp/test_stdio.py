"""A real ``mcp_serve`` subprocess over stdio, set up only through the command line, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from sshcontrol.models import RemoteCommand
from tests.polling import eventually
from tests.sshd import SshServer

pytestmark = [pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh data directory: the embedded database is created on first use."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "SSHCONTROL_DATA_DIR": str(tmp_path / "data"),
        "SSHCONTROL_LOG_LEVEL": "WARNING",
    }


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sshcontrol", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
    )


@pytest.fixture
def registered(env: dict[str, str], sshd: SshServer) -> Iterator[dict[str, str]]:
    """Register the suite's sshd with the CLI: add (password on stdin), scan, trust."""
    added = cli(
        env,
        "hosts",
        "add",
        "box",
        "--address",
        sshd.address,
        "--port",
        str(sshd.port),
        "--username",
        sshd.user,
        "--password-stdin",
        "--tag",
        "test",
        stdin=sshd.password + "\n",
    )
    assert added.returncode == 0, added.stderr
    scanned = cli(env, "hosts", "scan", "box")
    assert scanned.returncode == 0, scanned.stderr
    fingerprint = next(w for w in scanned.stdout.split() if w.startswith("SHA256:"))
    trusted = cli(env, "hosts", "trust", "box", fingerprint)
    assert trusted.returncode == 0, trusted.stderr
    yield env


def server_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "sshcontrol", "mcp_serve"], env=env, cwd="/"
    )


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_it_serves_the_tools_over_stdio(
    registered: dict[str, str], sshd: SshServer, tmp_path: Path
) -> None:
    async with Client(server_params(registered)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names >= {
            "ssh_connect",
            "ssh_status",
            "ssh_execute",
            "ssh_upload_file",
            "ssh_download_file",
            "ssh_list_files",
            "ssh_disconnect",
            "ssh_list_hosts",
        }
        hosts = await ok(client, "ssh_list_hosts")
        assert hosts["hosts"][0]["name"] == "box" and hosts["hosts"][0]["host_key_state"] == "trusted"
        result = await ok(client, "ssh_execute", host="box", command="echo hello; exit 4")
        assert result["stdout"] == "hello\n" and result["exit_status"] == 4
        remote = f"/tmp/sshc-stdio-{sshd.user}.txt"
        up = await ok(
            client, "ssh_upload_file", host="box", remote_path=remote, content="data\n", file_mode="0600"
        )
        down = await ok(client, "ssh_download_file", host="box", remote_path=remote)
        assert down["content"] == "data\n" and down["sha256"] == up["sha256"]
        await ok(client, "ssh_execute", host="box", command=f"rm -f {remote}")
    exported = cli(registered, "audit_export", "--format", "jsonl", "--host", "box")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["tool"] for r in rows] == ["ssh_execute", "ssh_upload_file", "ssh_download_file", "ssh_execute"]
    assert all(r["status"] == "ok" for r in rows)
    assert rows[0]["actor"].startswith("local-") and rows[0]["transport"] == "stdio"


def _server_pid(data_dir: str) -> int:
    """The mcp_serve process started with this data directory (found through /proc environ)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"SSHCONTROL_DATA_DIR={data_dir}".encode() in environ and b"mcp_serve" in cmdline:
            return int(proc.name)
    raise AssertionError("mcp_serve process not found")


async def test_it_marks_the_calls_of_a_killed_server_interrupted(
    registered: dict[str, str], sshd: SshServer
) -> None:
    async with Client(server_params(registered)) as client:
        await ok(client, "ssh_execute", host="box", command="true")
        pid = _server_pid(registered["SSHCONTROL_DATA_DIR"])

        ended = anyio.Event()

        async def long_call() -> None:
            # The server dies under this call; the client sees the transport close.
            with contextlib.suppress(Exception):
                await client.call_tool("ssh_execute", {"host": "box", "command": "sleep 77"})
            ended.set()

        async with anyio.create_task_group() as group:
            group.start_soon(long_call)
            await eventually(lambda: sshd.user_processes("sleep 77"), 15, "the command is running")
            os.kill(pid, signal.SIGKILL)
            # The client may not notice a dead stdio peer by itself: give it a bounded chance.
            with anyio.move_on_after(5):
                await ended.wait()
            group.cancel_scope.cancel()
    # The next start of any command notices the dead process's running row.
    async with Client(server_params(registered)) as client:
        await ok(client, "ssh_list_hosts")
    exported = cli(registered, "audit_export", "--format", "jsonl")
    rows = {json.loads(line)["command"]: json.loads(line) for line in exported.stdout.splitlines()}
    assert rows["sleep 77"]["status"] == "interrupted"
    subprocess.run(["pkill", "-KILL", "-u", sshd.user, "-f", "sleep 77"], check=False)
    await eventually(lambda: not sshd.user_processes("sleep 77"), 10, "the leftover command is gone")


def exported_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    exported = cli(env, "audit_export", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def _recorded_groups(env: dict[str, str]) -> int:
    """How many ``RemoteCommand`` rows the server's database holds (read-only: the server writes it)."""
    path = Path(env["SSHCONTROL_DATA_DIR"]) / "sshcontrol.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute(f"SELECT count(*) FROM {RemoteCommand._meta.db_table}").fetchone()[0])  # noqa: S608


def finished_kill(env: dict[str, str]) -> dict[str, Any] | None:
    rows = exported_rows(env)
    return next((r for r in rows if r["tool"] == "orphan_kill" and r["status"] != "running"), None)


async def test_the_next_server_kills_the_remote_commands_of_a_killed_one(
    registered: dict[str, str], sshd: SshServer, tmp_path: Path
) -> None:
    trace = f"/tmp/sshc-trace-orphan-{sshd.user}"
    command = f"sleep 303 && touch {trace}"
    async with Client(server_params(registered)) as client:
        await ok(client, "ssh_execute", host="box", command="true")
        pid = _server_pid(registered["SSHCONTROL_DATA_DIR"])
        async with anyio.create_task_group() as group:

            async def long_call() -> None:
                with contextlib.suppress(Exception):  # the server dies under it
                    await client.call_tool("ssh_execute", {"host": "box", "command": command})

            group.start_soon(long_call)
            await eventually(lambda: sshd.user_processes("sleep 303"), 15, "the command is running")
            # What a successor kills is what was recorded: a moment after the command starts.
            await eventually(lambda: _recorded_groups(registered), 15, "its process group recorded")
            os.kill(pid, signal.SIGKILL)
            group.cancel_scope.cancel()
    assert sshd.user_processes("sleep 303"), "the command ended with its server: nothing to test"
    # The next server's start sweeps the dead one's recorded process group.
    async with Client(server_params(registered)) as client:
        await eventually(lambda: not sshd.user_processes("sleep 303"), 30, "the orphaned command was killed")
        kill = await eventually(lambda: finished_kill(registered), 15, "the orphan_kill row")
        await ok(client, "ssh_list_hosts")
    rows = {r["command"]: r for r in exported_rows(registered)}
    original = rows[command]
    assert original["status"] == "interrupted"
    assert kill is not None
    assert kill["status"] == "ok" and kill["signal"] in ("TERM", "KILL"), kill
    assert kill["details"]["audit_event"] == original["id"]
    dead = kill["details"]["dead_worker"]
    assert dead.startswith("embedded:") and f":{pid}:" in dead
    assert kill["actor"].startswith("server embedded:") and kill["transport"] == "embedded"
    assert not Path(trace).exists()
    verified = cli(registered, "audit_verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_it_acts_as_the_client_whose_token_it_was_given(registered: dict[str, str]) -> None:
    added = cli(registered, "clients", "add", "ci-bot")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    granted = cli(registered, "clients", "grant", "ci-bot", "--host", "box", "--deny", "^rm ")
    assert granted.returncode == 0, granted.stderr
    as_bot = {**registered, "SSHCONTROL_CLIENT_TOKEN": token}
    async with Client(server_params(as_bot)) as client:
        assert (await ok(client, "ssh_execute", host="box", command="echo bot"))["stdout"] == "bot\n"
        refused = await client.call_tool("ssh_execute", {"host": "box", "command": "rm -f nothing"})
        assert refused.is_error
    exported = cli(registered, "audit_export", "--format", "jsonl")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["client"], r["status"]) for r in rows] == [("ci-bot", "ok"), ("ci-bot", "denied")]
    assert token not in exported.stdout


async def test_it_refuses_to_start_with_a_revoked_token(registered: dict[str, str]) -> None:
    token = cli(registered, "clients", "add", "gone").stdout.strip()
    assert cli(registered, "clients", "revoke", "gone").returncode == 0
    started = subprocess.run(
        [sys.executable, "-m", "sshcontrol", "mcp_serve"],
        env={**registered, "SSHCONTROL_CLIENT_TOKEN": token},
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert started.returncode != 0
    assert "SSHCONTROL_CLIENT_TOKEN: the token of client 'gone' was revoked" in started.stderr
    assert token not in started.stderr
