"""A raw JSON-RPC client over a real ``mcp_serve`` stdio pipe: the bytes of each response, as sent.

The SDK's client hands back parsed results; to hold the server to a size limit on the wire,
this one reads the newline-delimited messages itself. ``argv`` starts another stdio MCP server
instead (bench/output.py measures a peer the same way).

bench/output.py times whole pages of output through it, so it reads and parses a message as a
real client's transport does, not slower: the pipe is read through a 1 MiB buffer (a page's
message is about that; an 8 KiB buffer took 1-1.5 ms of read calls per page) and each line is
parsed with jiter (``pydantic_core.from_json``), the JSON parser under the SDK's own client
(``jsonrpc_message_adapter.validate_json``), which stdlib ``json`` is 2-6 times slower than.
The whole message is parsed, as any client must.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pydantic_core

# About one page of output's message (ssh_read_output's largest page is 1 MiB).
READ_BUFFER_BYTES = 1 << 20


@dataclass
class Response:
    raw: bytes  # the JSON-RPC response line, newline excluded
    message: dict[str, Any]

    @property
    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = self.message["result"]
        return result


class RawStdioClient:
    def __init__(self, env: dict[str, str], argv: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "sshcontrol", "mcp_serve"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            bufsize=READ_BUFFER_BYTES,
        )
        self.next_id = 0
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> Response:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            message = pydantic_core.from_json(line)
            if message.get("id") == self.next_id:
                return Response(line.rstrip(b"\n"), message)
        raise AssertionError("the server closed its stdout without answering")

    def call(self, tool: str, **arguments: Any) -> Response:
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        finally:
            assert self.proc.stdout is not None
            self.proc.stdout.close()
