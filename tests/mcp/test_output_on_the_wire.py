"""What one ssh_execute of a big output costs on the wire: a real mcp_serve over stdio, the suite's sshd.

`seq 1 400000` (2.6 MB) used to come back as about 2 MB of JSON: 1 MiB per stream, as text and
again as structured content. Now the whole response stays under twice the budget per stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.mcp.rawstdio import RawStdioClient
from tests.mcp.test_stdio import env, registered  # noqa: F401  (fixtures)

BUDGET = 16 * 1024
SEQ_TOTAL = sum(len(f"{n}\n") for n in range(1, 400001))
# The envelope, the summary sentence, field names, warnings: generous, far below one budget.
OVERHEAD = 4096
MARKER = re.compile(r"\[\.\.\. (\d+) lines, (\d+) bytes left out \(of 400000 lines, (\d+) bytes\)")


@pytest.fixture
def client(registered: dict[str, str]) -> Iterator[RawStdioClient]:  # noqa: F811
    raw = RawStdioClient(registered)
    yield raw
    raw.close()


@pytest.mark.parametrize("response_format", ["markdown", "json"])
def test_seq_400000_comes_back_within_twice_the_budget(client: RawStdioClient, response_format: str) -> None:
    response = client.call("ssh_execute", host="box", command="seq 1 400000", response_format=response_format)
    assert len(response.raw) < 2 * BUDGET * 2 + OVERHEAD, len(response.raw)
    result = response.result
    assert not result.get("isError"), result
    structured = result["structuredContent"]
    assert structured["stdout_bytes"] == SEQ_TOTAL and structured["stdout_lines"] == 400000
    stdout = structured["stdout"]
    head, marker, tail = re.split(r"\n(\[\.\.\. .*\.\.\.\])\n", stdout)
    head_lines, tail_lines = head.split("\n"), tail.rstrip("\n").split("\n")
    # Whole lines, in order, from the first and to the last.
    assert head_lines == [str(n) for n in range(1, len(head_lines) + 1)]
    assert tail_lines == [str(n) for n in range(400001 - len(tail_lines), 400001)]
    match = MARKER.search(marker)
    assert match is not None, marker
    lines, left_out, total = map(int, match.groups())
    assert total == SEQ_TOTAL and lines == 400000 - len(head_lines) - len(tail_lines)
    assert left_out == SEQ_TOTAL - len(head.encode()) - 1 - len(tail.encode())
    assert structured["stdout_omitted"] == {
        "offset": len(head.encode()) + 1,
        "bytes": left_out,
        "lines": lines,
        "exact": True,
        "inside_line": False,
    }
    # The text carries the same capped output (plus a summary), not the whole output again.
    text = result["content"][0]["text"]
    # In the json format the text is the structured content as JSON: the marker's quotes escaped.
    shown = marker if response_format == "markdown" else json.dumps(marker)[1:-1]
    assert shown in text and text.count("left out") == 1
