"""``file_mode`` as people write it, and a bad one quoted back briefly."""

from __future__ import annotations

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from sshcontrol.mcp.tools import parse_file_mode


@pytest.mark.parametrize(
    ("given", "mode"), [(644, 0o644), ("644", 0o644), ("0644", 0o644), ("0o600", 0o600), (None, None)]
)
def test_it_reads_octal_modes_as_people_write_them(given: int | str | None, mode: int | None) -> None:
    assert parse_file_mode(given) == mode


@pytest.mark.parametrize("given", ["rwx", "0o999", "", "07777", 8, 10**30])
def test_it_names_a_bad_mode(given: int | str) -> None:
    with pytest.raises(ToolError, match="is not an octal mode") as raised:
        parse_file_mode(given)
    assert repr(given) in str(raised.value)


def test_a_huge_bad_mode_is_quoted_by_its_start_and_length() -> None:
    # The schema takes a string of any length: the answer must not echo 100 KB back to the model.
    with pytest.raises(ToolError) as raised:
        parse_file_mode("x" * 100_001)
    message = str(raised.value)
    assert len(message) < 200 and "100001 characters" in message and "'" + "x" * 40 + "'" in message
