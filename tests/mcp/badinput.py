"""Hostile arguments for the MCP tools, and the checks every answer to them must pass.

The strategies mix values the server must handle (unknown names, traversal, NUL bytes in
paths, huge and tiny numbers) with values the argument schema must refuse (wrong types,
over-long strings, out-of-range numbers, missing required arguments). :func:`arguments`
draws one call's argument dict: all type-correct, one argument hostile, or chaos.

Nothing here runs a command on its own: the command strategies only ever produce ``echo``
of quoted text, a few fixed harmless forms, or (for an allow-listed read-only client)
arbitrary text that the client's rules confine to ``echo``.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from mcp.types import CallToolResult, TextContent


class _Missing:
    """Draw this to leave the argument out of the call."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def weighted(*options: tuple[int, SearchStrategy[Any]]) -> SearchStrategy[Any]:
    """``one_of`` with integer weights; shrinks towards the first option.

    (Hypothesis draws ``one_of`` branches for variety, not by count, so listing a strategy
    twice would not weigh it; a uniform integer picks the branch instead.)
    """
    total = sum(weight for weight, _ in options)

    def pick(index: int) -> SearchStrategy[Any]:
        for weight, strategy in options:
            if index < weight:
                return strategy
            index -= weight
        raise AssertionError("unreachable")

    return st.integers(0, total - 1).flatmap(pick)


def values(*items: Any) -> SearchStrategy[Any]:
    return st.sampled_from(items)


# -- building blocks ---------------------------------------------------------------------------

NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "\n",
    "\r\n",
    "\t",
    "'",
    '"',
    "\\",
    "%s%n",
    "{}{0}",
    "%(x)s",
    "$(id)",
    "`id`",
    "..",
    "../..",
    "/",
    "//",
    "~",
    "~root",
    "\u202e\u2066",
    "\ufeff",
    "💥",
    "null",
    "-1",
    "NaN",
    "a\x00b",
    "\x1b[31m",
    "\x7f\x80\x9f",
)

# One character many times: past every max_length in the schemas (4096, 100_000) and beyond.
LONG_STRINGS = st.builds(
    lambda char, count: char * count,
    values("x", "\x00", "é", "../", "\n", "💥"),
    values(101, 4097, 100_001, 250_000),
)

# Hostile text short enough for every max_length in the schemas: it gets past validation.
HOSTILE_SHORT_TEXT: SearchStrategy[str] = st.one_of(
    values(*NASTY_STRINGS),
    st.text(max_size=40),
    st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=12), st.text(max_size=12)),
)

HOSTILE_TEXT: SearchStrategy[str] = st.one_of(HOSTILE_SHORT_TEXT, LONG_STRINGS)

HUGE_INTS = values(0, -1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**100))

# JSON has no inf or nan: the protocol cannot carry them, so they are left out.
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)

WRONG_TYPES: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    FINITE_FLOATS,
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    values({"a": [{"b": None}, [1, [2, [3]]]]}, [[[[[]]]]], {"": {"": {"": ""}}}),
)

ANYTHING: SearchStrategy[Any] = st.one_of(HOSTILE_TEXT, WRONG_TYPES)

# Never-valid stand-ins for any argument: junk of every type, or no argument at all.
BAD: SearchStrategy[Any] = weighted((4, ANYTHING), (1, st.just(MISSING)))

RESPONSE_FORMAT = values(MISSING, "markdown", "json")

# Out of range (not above 0, above the 3600 s maximum) or of the wrong type; 1e-300 is in range.
TIMEOUTS = values(-1, 0, -1e12, 1e12, 10**30, 3600.000001, 1e-300, "5", "abc", "", [], True)

FILE_MODES_BAD = values(-1, 8, 10**30, "rwx", "0o999", "", " ", "\x00", "0x1ff", "07777", "9", 1.5, [], {})

BASE64_JUNK = values("@@@", "YQ", "YQ=", "====", "Y Q = =", "YWJj\x00", "-_-_", "YWJj\nZGVm", "é")


def echo_command(text: str) -> str:
    return "echo " + shlex.quote(text)


# Harmless commands with awkward results: invalid UTF-8, NUL in the output, output past the
# cap, non-zero exits, a signal, a syntax error, a command line the server must refuse.
FIXED_COMMANDS = (
    "printf '\\377\\376ok'",
    "printf 'a\\0b\\0'",
    "head -c 1500000 /dev/zero",
    "head -c 3000 /dev/urandom",
    "echo out; echo err >&2; exit 255",
    "kill -KILL $$",
    "exit 300",
    "cat",
    "echo '",
    "true",
    "echo é 💥 \u202e done",
    "echo ok\r",
    "echo \x1b[31mred",
    "echo a\x00b",
    ": " + "x" * 99_990,
)

SAFE_COMMANDS: SearchStrategy[str] = st.one_of(
    st.text(max_size=60).map(echo_command),
    values(*FIXED_COMMANDS),
)

# For a read-only client whose rules allow nothing but ``echo``: any text at all.
ARBITRARY_COMMANDS: SearchStrategy[str] = st.one_of(
    st.text(min_size=1),
    st.text().map(lambda t: "echo " + t),
    values(*NASTY_STRINGS, *FIXED_COMMANDS, "echo $(id)", "echo `id`; id", "echo ok > x", "echo\nid"),
)

# Commands the server must refuse (wrong types, empty, too long, control characters, none at
# all), and long runs of one character, which at most fail as "command not found".
COMMAND_BAD: SearchStrategy[Any] = st.one_of(
    WRONG_TYPES,
    st.just(MISSING),
    values("", "\x00", "a\x00b", "\x1b[31m", "echo " + "x" * 100_000),
    LONG_STRINGS,
)


# -- one call's arguments ----------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """How to draw one argument: ``good`` values are type-correct, ``bad`` ones are not."""

    good: SearchStrategy[Any]
    bad: SearchStrategy[Any] = BAD


@st.composite
def arguments(
    draw: st.DrawFn, spec: Mapping[str, Arg], exclusive: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """One call's arguments: all good (half the time), one bad, or each independently bad.

    For each ``exclusive`` pair (arguments a call must give exactly one of) mostly only the
    first or only the second is kept, sometimes both or neither. Bad calls sometimes carry an
    extra, unknown key as well.
    """
    mode = draw(weighted((3, st.just("good")), (2, st.just("one bad")), (1, st.just("chaos"))))
    target = draw(values(*spec)) if mode == "one bad" else None
    drawn: dict[str, Any] = {}
    for name, arg in spec.items():
        bad = name == target or (mode == "chaos" and draw(st.booleans()))
        value = draw(arg.bad if bad else arg.good)
        if value is not MISSING:
            drawn[name] = value
    for first, second in exclusive:
        keep = draw(
            weighted((5, st.just(first)), (3, st.just(second)), (1, st.just("both")), (1, st.just("")))
        )
        for name in (first, second):
            if keep not in (name, "both") and name != target:
                drawn.pop(name, None)
    if mode != "good" and draw(st.integers(0, 4)) == 0:
        drawn[draw(values("bogus", "Host", "sessionId", "__proto__", "", "\x00"))] = draw(ANYTHING)
    return drawn


# -- checking an answer ------------------------------------------------------------------------

# The SDK's answer to arguments that fail the schema: a pydantic report, one block per field.
_VALIDATION = re.compile(r"(\d+) validation errors? for \w+Arguments\n")
_VALIDATION_BLOCK = re.compile(
    r"[^\n]+\n  [^\n]+ \[type=\w+, [^\n]*\]\n    For further information visit https://errors\.pydantic\.dev/\S+"
)

# A whole answer may echo argument values (paths are up to 4096 characters, escaped by repr).
MAX_ANSWER = 64_000
# An error's own words, with the arguments it echoes left out.
MAX_OWN_WORDS = 2000


def _echoes(arguments: Mapping[str, Any]) -> list[str]:
    """The forms in which an error may quote the caller's string arguments, longest first."""
    found: set[str] = set()
    for value in arguments.values():
        if isinstance(value, str) and value:
            found.update({value, repr(value), repr(value)[1:-1], value[:100], json.dumps(value)})
    return sorted(found, key=len, reverse=True)


def own_words(message: str, arguments: Mapping[str, Any]) -> str:
    for echo in _echoes(arguments):
        message = message.replace(echo, "<arg>")
    return message


def error_text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent), result.content
    return first.text


def check_answer(result: Any, tool: str, arguments: Mapping[str, Any], secret: str) -> None:
    """The property every call must satisfy, whatever its arguments."""
    assert isinstance(result, CallToolResult), f"{tool} answered {result!r}"
    assert result.content, f"{tool} answered with no content"
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert texts, f"{tool} answered without text: {result.content!r}"
    everything = "\n".join(texts) + json.dumps(result.structured_content)
    if secret in everything:
        # Only the SDK's schema report may hold it, and only as the caller's own input echoed back
        # (pydantic quotes the input dict of a missing argument); never a stored credential.
        assert result.is_error and _VALIDATION.search(texts[0]), f"{tool} leaked the host's password"
        assert secret in repr(arguments), f"{tool} leaked the host's password"
    if not result.is_error:
        assert result.structured_content is not None, f"{tool} succeeded without structured content"
        return
    text = texts[0]
    assert len(text) < MAX_ANSWER, f"{tool} error is {len(text)} characters long"
    assert "Traceback" not in text and 'File "/' not in text, text[:2000]
    prefix = f"Error executing tool {tool}: "
    # The SDK answers a crash (anything but ToolError) with the bare "Error executing tool X".
    assert text.startswith(prefix), f"{tool} crashed instead of answering: {text[:500]!r}"
    reason = text.removeprefix(prefix)
    assert reason.strip(), f"{tool} gave an empty reason"
    assert "internal error" not in reason.lower(), reason[:500]
    validation = _VALIDATION.match(reason)
    if validation is not None:
        count = int(validation.group(1))
        blocks = reason[validation.end() :]
        assert len(_VALIDATION_BLOCK.findall(blocks)) == count, reason[:2000]
        assert len(blocks.splitlines()) == 3 * count, reason[:2000]
        assert len(reason) < 200 + 600 * count, f"{tool} validation report is {len(reason)} long"
        return
    own = own_words(reason, arguments)
    assert "\n" not in own, f"{tool} error is not one line: {reason[:2000]!r}"
    assert len(own) < MAX_OWN_WORDS, f"{tool} error is {len(own)} characters of its own: {own[:300]!r}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
