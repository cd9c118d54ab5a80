"""Transfers when the worker is on another machine: the bytes travel through the broker.

The pool's workers have their own transfer directory (``tests/distributed/conftest.py``),
so a local path can only be right if ``mcp_serve`` (whose directory is the test process's)
streams the file to the worker and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from audit.models import AuditEvent
from sshcontrol.holders import live_workers
from sshcontrol.localfiles import local_root
from sshcontrol.models import SshSession
from tests.celery_worker import worker_command
from tests.database import closing_connections
from tests.distributed.conftest import REPO, WorkerPool, service_env
from tests.polling import eventually, wait_until
from tests.sshd import SshServer

MIB = 1 << 20
# Peak RSS a process may gain while it moves a 200 MiB file: generous, far below the file's size.
MEMORY_BOUND = 80 * MIB


def params(broker_url: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "sshcontrol", "mcp_serve"],
        env=service_env(broker_url, **env),
        cwd=str(REPO),
    )


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def status(pid: int, field: str) -> int:
    """A /proc/<pid>/status size field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def mcp_serve_pid() -> int:
    """The mcp_serve child of this test process (the stdio client started it)."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me and b"mcp_serve" in cmdline:
            return int(entry.name)
    raise AssertionError("mcp_serve is not running")


@pytest.fixture
def remote_dir(sshd: SshServer) -> Iterator[Path]:
    """A directory on the test host (this machine) owned by the SSH user."""
    path = Path(f"/tmp/sshc-across-{sshd.user}")
    subprocess.run(["rm", "-rf", str(path)], check=True)
    subprocess.run(["install", "-d", "-o", sshd.user, "-m", "0700", str(path)], check=True)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.fixture
def local_dir() -> Iterator[Path]:
    path = local_root() / "across"
    subprocess.run(["rm", "-rf", str(path)], check=True)
    path.mkdir(mode=0o700)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    target = {} if "session_id" in arguments else {"host": "h"}
    result = await client.call_tool(tool, {**target, **arguments})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(part, "text", "") for part in result.content)


def worker_of(session_id: str) -> str:
    return SshSession.objects.get(session_id=session_id).worker


def holder_pid(workers: WorkerPool, session_id: str) -> int:
    return workers.procs[worker_of(session_id)].pid


def test_it_streams_files_between_mcp_serve_and_a_worker_with_its_own_directory(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path, local_dir: Path
) -> None:
    make_host("h")
    small, big = local_dir / "small.bin", local_dir / "big.bin"
    small_sha, big_sha = random_file(small, MIB), random_file(big, 200 * MIB)

    async def body() -> dict[str, int]:
        async with Client(params(workers.broker_url)) as client:
            session = (await call(client, "ssh_connect"))["session_id"]
            # Warm both processes up (imports, connections) before their memory is measured.
            await call(
                client, "ssh_upload_file", local_path="across/small.bin", remote_path=f"{remote_dir}/warm"
            )
            serve, worker = (
                mcp_serve_pid(),
                await asyncio.to_thread(closing_connections(holder_pid), workers, session),
            )
            before = {"serve": status(serve, "VmRSS"), "worker": status(worker, "VmRSS")}
            for name, sha, size in (("small", small_sha, MIB), ("big", big_sha, 200 * MIB)):
                up = await call(
                    client,
                    "ssh_upload_file",
                    session_id=session,
                    local_path=f"across/{name}.bin",
                    remote_path=f"{remote_dir}/{name}",
                )
                assert (up["bytes"], up["sha256"]) == (size, sha)
                assert sha256_of(remote_dir / name) == sha
                peaks[f"{name} up"] = status(worker, "VmHWM") - before["worker"]
                down = await call(
                    client,
                    "ssh_download_file",
                    session_id=session,
                    remote_path=f"{remote_dir}/{name}",
                    local_path=f"across/{name}.back",
                )
                assert (down["bytes"], down["sha256"]) == (size, sha)
                assert sha256_of(local_dir / f"{name}.back") == sha
                peaks[f"{name} down"] = status(worker, "VmHWM") - before["worker"]
            return {
                "serve": status(serve, "VmHWM") - before["serve"],
                "worker": status(worker, "VmHWM") - before["worker"],
            }

    peaks: dict[str, int] = {}  # the worker's peak growth after each step, for the failure message

    growth = asyncio.run(body())
    assert growth["serve"] < MEMORY_BOUND, (growth, peaks)
    # Through RabbitMQ too: the worker once peaked near the file's size on some runs (214 MB
    # for 200 MiB). That was paramiko's prefetch falling back to synchronous reads while its
    # thread kept asking for the rest (sshlib/sftp_reads.py); downloads no longer use it.
    assert growth["worker"] < MEMORY_BOUND, (growth, peaks)
    # Nothing reached the worker's own transfer directory: the bytes came through the stream.
    assert list(workers.transfer_root.iterdir()) == []
    rows = AuditEvent.objects.filter(tool__in=["ssh_upload_file", "ssh_download_file"]).order_by("id")
    recorded = [(r.tool, r.file_size, r.file_sha256, r.status) for r in rows][1:]
    assert recorded == [
        ("ssh_upload_file", MIB, small_sha, "ok"),
        ("ssh_download_file", MIB, small_sha, "ok"),
        ("ssh_upload_file", 200 * MIB, big_sha, "ok"),
        ("ssh_download_file", 200 * MIB, big_sha, "ok"),
    ]
    assert all(r.local_path.startswith(str(local_root())) for r in rows)


def test_it_streams_inline_upload_content(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path
) -> None:
    make_host("h")
    text = "inline ünïcode\n" * 500  # one page of an inline download

    async def body() -> tuple[dict[str, Any], dict[str, Any]]:
        async with Client(params(workers.broker_url)) as client:
            up = await call(client, "ssh_upload_file", content=text, remote_path=f"{remote_dir}/inline")
            # Inline downloads are one page in the reply (capped), not streamed.
            down = await call(client, "ssh_download_file", remote_path=f"{remote_dir}/inline")
            return up, down

    up, down = asyncio.run(body())
    sha = hashlib.sha256(text.encode()).hexdigest()
    assert up["sha256"] == sha and (remote_dir / "inline").read_text() == text
    assert down["sha256"] == sha and down["content"] == text


def partial_temp(directory: Path, name: str, at_least: int) -> bool:
    return any(p.stat().st_size >= at_least for p in directory.glob(f".{name}.sshc-*.tmp"))


def test_a_worker_killed_mid_transfer_gives_a_clear_error_and_no_partial_file(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path, local_dir: Path
) -> None:
    make_host("h")
    big = local_dir / "big.bin"
    random_file(big, 200 * MIB)
    (remote_dir / "src").write_bytes(b"")
    subprocess.run(["cp", str(big), str(remote_dir / "src")], check=True)

    async def body() -> list[str]:
        errors = []
        # A one-frame window slows the stream enough to be caught in the middle.
        async with Client(params(workers.broker_url, SSHCONTROL_TRANSFER_WINDOW_CHUNKS="1")) as client:
            for tool, args, directory, name in (
                (
                    "ssh_upload_file",
                    {"local_path": "across/big.bin", "remote_path": f"{remote_dir}/dst"},
                    remote_dir,
                    "dst",
                ),
                (
                    "ssh_download_file",
                    {"remote_path": f"{remote_dir}/src", "local_path": "across/back"},
                    local_dir,
                    "back",
                ),
            ):
                session = (await call(client, "ssh_connect"))["session_id"]
                node = await asyncio.to_thread(closing_connections(worker_of), session)
                running = asyncio.create_task(client.call_tool(tool, {"session_id": session, **args}))
                await eventually(partial(partial_temp, directory, name, 8 * MIB), 60, "a partial file")
                workers.kill(node)
                errors.append(error_text(await running))
                await asyncio.to_thread(workers.ensure)
        return errors

    errors = asyncio.run(body())
    assert all("stopped" in e for e in errors), errors
    assert not (remote_dir / "dst").exists()
    # mcp_serve's side removed its temporary file; the killed worker could not remove its own
    # (an SFTP temporary name on the host), but nothing was left at the destination's name.
    assert sorted(p.name for p in local_dir.iterdir()) == ["big.bin"]
    assert set(
        AuditEvent.objects.filter(tool__in=["ssh_upload_file", "ssh_download_file"]).values_list(
            "status", flat=True
        )
    ) == {"interrupted"}


def test_a_stream_dropped_by_mcp_serve_leaves_no_partial_file_on_the_host(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path, local_dir: Path
) -> None:
    make_host("h")
    random_file(local_dir / "big.bin", 200 * MIB)

    killed: list[int] = []

    async def body() -> None:
        async with Client(params(workers.broker_url, SSHCONTROL_TRANSFER_WINDOW_CHUNKS="1")) as client:
            running = asyncio.create_task(
                client.call_tool(
                    "ssh_upload_file",
                    {"host": "h", "local_path": "across/big.bin", "remote_path": f"{remote_dir}/dst"},
                )
            )
            await eventually(lambda: partial_temp(remote_dir, "dst", 8 * MIB), 60, "a partial file")
            pid = mcp_serve_pid()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            await asyncio.wait_for(running, 30)

    with contextlib.suppress(Exception):  # the client loses its server, in whichever way the SDK says it
        asyncio.run(body())
    assert killed, "mcp_serve was not killed mid-transfer"
    # The worker stops waiting after its stall timeout (8 s here) and removes its temporary file.
    wait_until(lambda: list(remote_dir.iterdir()) == [], 40, "the host's temporary file removed")
    row = AuditEvent.objects.get(tool="ssh_upload_file")
    assert row.status == "running"  # its mcp_serve died; the next start marks it interrupted


def check_deploy(broker_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sshcontrol", "check", "--deploy"],
        env=service_env(broker_url, SSHCONTROL_TRANSFER_SHARED="1", **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_shared_storage_is_refused_when_a_worker_does_not_see_the_directory(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path, local_dir: Path
) -> None:
    make_host("h")
    (local_dir / "f").write_bytes(b"shared?")

    async def body() -> str:
        async with Client(params(workers.broker_url, SSHCONTROL_TRANSFER_SHARED="1")) as client:
            result = await client.call_tool(
                "ssh_upload_file", {"host": "h", "local_path": "across/f", "remote_path": f"{remote_dir}/f"}
            )
            return error_text(result)

    refused = asyncio.run(body())
    assert "does not see this process's transfer directory" in refused, refused
    assert not (remote_dir / "f").exists()
    checked = check_deploy(workers.broker_url)
    assert checked.returncode != 0 and "sshcontrol.E085" in checked.stderr, checked.stderr
    assert all(name in checked.stderr for name in workers.names)


def test_shared_storage_passes_its_probe_when_the_worker_sees_the_directory(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path, local_dir: Path
) -> None:
    make_host("h")
    (local_dir / "f").write_bytes(b"shared!")
    workers.stop_all()  # only a worker that shares the directory may take the session (restarted after)
    name = f"sshc{secrets.token_hex(3)}shared@{socket.gethostname()}"
    with (workers.logdir / "shared.log").open("ab") as log:
        # No SSHCONTROL_LOCAL_ROOT of its own: the test process's, as a shared mount would give.
        proc = subprocess.Popen(
            worker_command(name, 4),
            env=service_env(workers.broker_url, SSHCONTROL_TRANSFER_SHARED="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_until(lambda: live_workers() == [name], 120, "only the shared worker live")

        async def body() -> dict[str, Any]:
            async with Client(params(workers.broker_url, SSHCONTROL_TRANSFER_SHARED="1")) as client:
                return await call(
                    client, "ssh_upload_file", local_path="across/f", remote_path=f"{remote_dir}/f"
                )

        up = asyncio.run(body())
        assert up["sha256"] == hashlib.sha256(b"shared!").hexdigest()
        assert (remote_dir / "f").read_bytes() == b"shared!"
        checked = check_deploy(workers.broker_url)
        assert "E085" not in checked.stderr and "E089" not in checked.stderr, checked.stderr
        assert not list(local_root().glob(".sshcontrol-probe-*")), "a probe file was left behind"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
