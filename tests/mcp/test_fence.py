"""Remote output in a markdown result sits in a code fence it cannot close."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sshcontrol.mcp.render import _fence

_TEXT = st.lists(st.sampled_from(["`", "``", "```", "````", "\n", "x", " ", "~~~"]), max_size=30).map("".join)


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_no_line_of_the_output_closes_its_fence(text: str) -> None:
    fenced = _fence(text)
    ticks = fenced.split("\n", 1)[0]
    assert set(ticks) == {"`"} and len(ticks) >= 3 and fenced.endswith("\n" + ticks)
    inner = fenced[len(ticks) + 1 : -len(ticks) - 1]
    # A closing fence is a line of at least as many backticks as the opening one.
    assert not any(set(line) == {"`"} and len(line) >= len(ticks) for line in inner.split("\n"))


def test_a_fence_is_longer_than_the_longest_backtick_line() -> None:
    assert _fence("a\n`````\nb").startswith("``````\n")
    assert _fence("````").startswith("`````\n")
    assert _fence("inline ``` only").startswith("```\n")
