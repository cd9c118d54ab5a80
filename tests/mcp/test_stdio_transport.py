"""sshcontrol's loop-driven stdio transport (``sshcontrol.mcp.stdio``) in a real subprocess.

It must carry what the SDK's transport carries (big messages too), and keep stray output of
the server or its children off the protocol's stdout, as the SDK does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

pytestmark = [pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]

SERVER = """
import os, subprocess, sys
import anyio
from mcp.server import MCPServer
from sshcontrol.mcp import stdio

server = MCPServer(name="transport-test")

@server.tool()
async def echo(text: str) -> str:
    return text

@server.tool()
async def noisy() -> str:
    print("stray print on stdout")
    sys.stdout.flush()
    subprocess.run(["sh", "-c", "echo child writes to fd 1; cat"], check=True)
    return "still framed"

anyio.run(stdio.serve, server)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def params(stderr_log: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command="sh",
        args=["-c", f'exec "$0" -c "$1" 2>>{stderr_log}', sys.executable, SERVER],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


async def test_it_keeps_stray_output_off_the_protocol(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    async with Client(params(log)) as client:
        first = await client.call_tool("noisy", {})
        assert not first.is_error and first.structured_content == {"result": "still framed"}
        again = await client.call_tool("echo", {"text": "after"})
        assert again.structured_content == {"result": "after"}
    text = log.read_text()
    assert "stray print on stdout" in text and "child writes to fd 1" in text


async def test_it_carries_a_message_of_several_megabytes(tmp_path: Path) -> None:
    big = "x" * (5 << 20)
    async with Client(params(tmp_path / "stderr.log")) as client:
        result = await client.call_tool("echo", {"text": big})
        assert result.structured_content == {"result": big}
