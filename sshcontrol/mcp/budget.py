"""What of a command's output a model receives: a byte budget per stream, head and tail.

The SSH runtime keeps up to ``SSHCONTROL_MAX_OUTPUT_BYTES`` per stream for the audit row (1 MiB
by default); that is sized for an admin's page, not for a model's context. A tool result carries
at most ``SSHCONTROL_OUTPUT_BUDGET_BYTES`` per stream (16 KiB by default): the first lines and
the last lines, cut at line boundaries (inside a line only when one line alone is longer than
its half of the budget, and never inside a UTF-8 character), with one marker line between them
saying how many lines and bytes were left out and how to read them.

Safety first, exact numbers second. The cut is made on the raw text, which gives exact byte
offsets into the stream as kept (what ``ssh_read_output`` pages through). The two pieces are
cleaned (``audit.output_hygiene``) alone, and used only if they are, character for character,
the start and the end of a cleaned context around them: the whole kept text when it is small,
else a window of ``WINDOW`` bytes on the inner side of each cut (longer than any real key
block, and all other cleaning is line by line). When they are not (a private key block or a
token across the cut, an escape sequence or a carriage return that cleaning rewrote), the
cleaned context itself is cut and the numbers count the cleaned text: off by what cleaning
changed, never showing what cleaning hid. Output warnings are those of the lines shown.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from audit.output_hygiene import Flag, clean
from audit.redaction import REDACTED

Stream = Literal["stdout", "stderr"]

# Context cleaned on each side of a cut, in bytes: longer than any real private key block (a PEM
# RSA key of 16384 bits is about 12 KiB), so that a secret across a cut is judged whole.
WINDOW = 64 << 10

# The marker the SSH runtime puts where it dropped the middle of a stream (sshlib.capture.Capture.text).
_HOLDER_MARKER = re.compile(r"\n\[\.\.\. \d+ bytes truncated \.\.\.\]\n")


@dataclass(frozen=True)
class Omitted:
    """The part of a stream a result leaves out, in the stream's bytes as kept."""

    offset: int  # where it starts: pass this to ssh_read_output
    bytes: int
    lines: int  # line breaks inside it: whole lines left out, when both cuts fall on line ends
    exact: bool  # False when the numbers count the cleaned text (see the module docstring)
    inside_line: bool  # a cut falls inside a line longer than the budget allows


@dataclass(frozen=True)
class Fitted:
    """One stream as a model receives it."""

    text: str
    warnings: list[Flag]
    redactions: int
    omitted: Omitted | None


@dataclass(frozen=True)
class _Cut:
    head: bytes
    tail: bytes
    tail_start: int  # offset of the tail in the stream
    inside_line: bool


def _char_start(data: bytes, index: int, forward: bool) -> int:
    """``index`` moved to the nearest start of a UTF-8 character (continuation bytes are 10xxxxxx)."""
    while 0 < index < len(data) and data[index] & 0xC0 == 0x80:
        index += 1 if forward else -1
    return index


def _head_end(data: bytes, limit: int) -> tuple[int, bool]:
    """Where a head of at most ``limit`` bytes ends: after a newline, or inside the first line."""
    if len(data) <= limit:
        return len(data), False
    newline = data.rfind(b"\n", 0, limit)
    if newline >= 0:
        return newline + 1, False
    return _char_start(data, limit, forward=False), True


def _tail_start(data: bytes, limit: int) -> tuple[int, bool]:
    """Where a tail of at most ``limit`` bytes starts: after a newline, or inside the last line."""
    if len(data) <= limit:
        return 0, False
    earliest = len(data) - limit
    # A line end at or after `earliest - 1` (not the stream's last byte) starts a whole line.
    newline = data.find(b"\n", earliest - 1, len(data) - 1)
    if newline >= 0:
        return newline + 1, False
    return _char_start(data, earliest, forward=True), True


def _split_holder_cut(text: str) -> tuple[str, str] | None:
    """The kept head and tail around the runtime's own cut marker: the one nearest the middle.

    Output may print a line that looks like the marker; the runtime keeps equal halves, so
    the real one is where the halves meet.
    """
    middle = len(text) / 2
    best = min(_HOLDER_MARKER.finditer(text), key=lambda m: abs(m.start() - middle), default=None)
    if best is None:
        return None
    return text[: best.start()], text[best.end() :]


def _cut_pair(head_source: bytes, tail_source: bytes, budget: int, total_bytes: int, same: bool) -> _Cut:
    """A head from the start of ``head_source`` and a tail from the end of ``tail_source``
    (``same``: they are one text, and the tail may not reach back into the head)."""
    head_end, head_inside = _head_end(head_source, budget // 2)
    tail_budget = budget - head_end
    if same:
        tail_budget = min(tail_budget, len(tail_source) - head_end)
    start, tail_inside = _tail_start(tail_source, tail_budget)
    tail = tail_source[start:]
    return _Cut(head_source[:head_end], tail, total_bytes - len(tail), head_inside or tail_inside)


def _cut(text: str, budget: int, total_bytes: int, holder_cut: bool) -> _Cut:
    split = _split_holder_cut(text) if holder_cut else None
    if split is None:
        data = text.encode()
        return _cut_pair(data, data, budget, total_bytes, same=True)
    return _cut_pair(split[0].encode(), split[1].encode(), budget, total_bytes, same=False)


def _windows(data: bytes, head_len: int, tail_len: int) -> tuple[bytes, bytes]:
    """The start of ``data`` to WINDOW bytes past the head, and from WINDOW bytes before the tail
    to the end, widened or narrowed to whole lines (to a character boundary in a line that long)."""
    limit = min(len(data), head_len + WINDOW)
    newline = data.rfind(b"\n", head_len, limit)
    head_end = newline + 1 if newline >= 0 else _char_start(data, limit, forward=False)
    earliest = max(0, len(data) - tail_len - WINDOW)
    newline = data.find(b"\n", earliest, len(data) - tail_len)
    tail_start = newline + 1 if newline >= 0 else _char_start(data, earliest, forward=True)
    return data[: max(head_end, head_len)], data[min(tail_start, len(data) - tail_len) :]


def _shown_lines(text: str) -> int:
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


def marker(
    stream: Stream, omitted: Omitted, total_lines: int, total_bytes: int, output_id: str | None
) -> str:
    """The line between head and tail: what was left out, and how to read it."""
    about = "" if omitted.exact else "about "
    inside = "; a cut falls inside a long line" if omitted.inside_line else ""
    what = (
        f"[... {about}{omitted.lines} lines, {about}{omitted.bytes} bytes left out "
        f"(of {total_lines} lines, {total_bytes} bytes){inside}; "
    )
    if output_id:
        call = f'ssh_read_output(output_id="{output_id}", stream="{stream}", offset={omitted.offset})'
        how = f"read them with {call}"
    else:
        how = (
            "they were not kept: to see them, run the command again with its output filtered "
            "(grep, head, tail, sed -n) or written to a file"
        )
    return f"{what}{how} ...]"


def fit(
    stream: Stream,
    kept: str,
    *,
    total_bytes: int,
    total_lines: int,
    holder_cut: bool,
    budget: int,
    output_id: str | None = None,
) -> Fitted:
    """``kept`` (a stream as the SSH runtime kept it, raw) cleaned and cut to ``budget`` bytes.

    ``total_bytes`` and ``total_lines`` count the whole stream; ``holder_cut`` says the runtime
    already dropped its middle (its marker is in ``kept``).
    """
    data = kept.encode()
    windowed = len(data) > 2 * WINDOW + budget
    if not windowed:
        whole = clean(kept)
        if len(whole.text.encode()) <= budget:
            return Fitted(whole.text, whole.warnings, whole.redactions, None)
    raw = _cut(kept, budget, total_bytes, holder_cut)
    if windowed:
        # Only the text around the cuts is cleaned: a 1 MiB output costs two windows, not 1 MiB.
        head_window, tail_window = _windows(data, len(raw.head), len(raw.tail))
        first, last = clean(head_window.decode()), clean(tail_window.decode())
        # Lines of the stream before the tail window (its flags are numbered from there).
        newlines_before = total_lines - (0 if kept.endswith("\n") else 1) - tail_window.count(b"\n")
    else:
        first = last = whole
        newlines_before = 0
    head, tail = clean(raw.head.decode()).text, clean(raw.tail.decode()).text
    exact = first.text.startswith(head) and last.text.endswith(tail)
    if exact:
        cut = raw
    else:
        cut = (
            _cut_pair(first.text.encode(), last.text.encode(), budget, total_bytes, same=False)
            if windowed
            else _cut(whole.text, budget, total_bytes, holder_cut)
        )
        head, tail = cut.head.decode(), cut.tail.decode()
    # Warnings about what is shown: the head's lines, and the tail's (numbered in the stream).
    head_lines, tail_from = _shown_lines(head), _shown_lines(last.text) - _shown_lines(tail)
    warnings = [f for f in first.warnings if f.line <= head_lines]
    warnings += [
        dataclasses.replace(f, line=f.line + newlines_before) for f in last.warnings if f.line > tail_from
    ]
    newlines = total_lines - (0 if not kept or kept.endswith("\n") else 1)
    omitted = Omitted(
        offset=len(cut.head),
        bytes=max(0, cut.tail_start - len(cut.head)),
        lines=max(0, newlines - cut.head.count(b"\n") - cut.tail.count(b"\n")),
        exact=exact,
        inside_line=cut.inside_line,
    )
    line = marker(stream, omitted, total_lines, total_bytes, output_id)
    text = f"{head}{'' if not head or head.endswith(chr(10)) else chr(10)}{line}\n{tail}"
    return Fitted(text, warnings, head.count(REDACTED) + tail.count(REDACTED), omitted)


# -- pages of a file (ssh_download_file inline) -----------------------------------------------------


@dataclass(frozen=True)
class FilePage:
    """What of a page read from a file a result carries, and where the next page starts."""

    data: bytes  # the bytes shown (text, or base64 of them)
    text: str | None  # the page as UTF-8 text when it is text, else None (shown as base64)
    next_offset: int | None  # None when the page reaches the end of the file


def _text_end(data: bytes, at_end: bool) -> int | None:
    """How much of ``data`` is whole UTF-8 text (a character cut at the page's end left for the
    next page); None when it is not text."""
    try:
        data.decode("utf-8")
        return len(data)
    except UnicodeDecodeError as exc:
        # Only a character cut by the page boundary itself is allowed, and only before the end.
        if not at_end and exc.reason == "unexpected end of data" and exc.start >= len(data) - 3:
            return exc.start
        return None


def file_page(data: bytes, offset: int, file_size: int, budget: int) -> FilePage:
    """Shape a page read from ``offset`` (at most ``budget`` bytes) to what one result may carry.

    Text ends at a line end where one falls in the page's second half, else at a character
    boundary; binary content is shown as base64, so only three quarters of the budget is taken.
    """
    at_end = offset + len(data) >= file_size
    end = _text_end(data, at_end)
    if end is not None:
        if not at_end:
            newline = data.rfind(b"\n", 0, end)
            if newline >= end // 2:
                end = newline + 1
        if end > 0 or at_end:
            kept = data[:end]
            done = at_end and end == len(data)
            return FilePage(kept, kept.decode("utf-8"), None if done else offset + len(kept))
    # At least one byte, so that a page always moves on (length=1 on a multibyte character).
    room = max(1, budget * 3 // 4)
    kept = data[:room]
    done = offset + len(kept) >= file_size
    return FilePage(kept, None, None if done else offset + len(kept))


# The end of a private key block whose BEGIN line was on an earlier page: the redaction patterns
# need the BEGIN line, so a page that starts inside a key's body is hidden up to its END line.
_KEY_TAIL = re.compile(
    r"\A(?:(?!-----BEGIN )[\s\S]){0,65536}?(-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
)


def hide_key_tail(text: str) -> str:
    """``text`` (a page that does not start the file) with a key body it starts inside hidden."""
    if "PRIVATE KEY" not in text:
        return text
    return _KEY_TAIL.sub(lambda m: f"{REDACTED}\n{m.group(1)}", text, count=1)
