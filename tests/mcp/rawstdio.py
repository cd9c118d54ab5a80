"""A raw JSON-RPC client over a real ``mcp_serve`` stdio pipe: the bytes of each response, as sent.

The SDK's client hands back parsed results; to hold the server to a size limit on the wire,
this one reads the newline-delimited messages itself. ``argv`` starts another stdio MCP server
instead (bench/output.py measures a peer the same way).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any


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
            message = json.loads(line)
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
