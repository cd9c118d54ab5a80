"""Remote output made fit for a model to read: untrusted text, cleaned and flagged.

Whatever a host prints reaches a language model, which takes text at its word. Output can
carry what a terminal would hide or act on (escape sequences that retitle the window, draw
hyperlinks whose target differs from their text, or move the cursor over earlier text),
characters that read differently than they show (bidi overrides, zero-width characters,
Unicode tag characters that spell invisible ASCII), lines that pose as another turn of the
conversation (``Assistant:``, ``<|im_start|>``, a JSON-RPC message, a closing tool-result
tag), and secrets. :func:`clean` returns what a model may see and a list of what it
flagged; the audit row keeps the raw bytes (capped and redacted) for the admin.

What is done with each:

- Terminal escape sequences (CSI, OSC including OSC 8 hyperlinks and window titles, DCS,
  APC, PM, SOS and the short ``ESC x`` forms, 7-bit and 8-bit alike) are removed; one
  warning says how many and shows the first.
- ``\\r\\n`` becomes ``\\n``; a lone ``\\r`` (a progress bar rewriting its line, or text
  written over to hide it from a terminal) also becomes ``\\n``, so nothing a terminal
  would overwrite is hidden from the model, at the price of one line per rewrite.
- NUL and the other C0 and C1 control characters, and DEL, are removed (``\\n`` and ``\\t``
  stay); one warning counts them.
- Bidirectional controls and other invisible characters (the set ``hosts.visible`` knows,
  spaces other than U+0020 aside: they show as a space) stay in the text and are flagged
  per line, written visibly in the excerpt. Unicode tag characters (U+E0000..U+E007F) have
  no use in output and are read by models as hidden ASCII: they are replaced with their
  visible ``<U+E0041>`` form.
- Lines that imitate a conversation role or a tool protocol are flagged, not changed.
- Secret-shaped strings are replaced with ``[REDACTED]`` by :func:`audit.redaction.redact`
  (the same patterns as the audit row); ``redactions`` counts the markers in the result.

Cleaning is idempotent: cleaning cleaned text changes nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from audit.cues import Cues, in_lines
from audit.redaction import CUE_WORDS, REDACTED, redact, redactable
from hosts.visible import code_point, is_hidden

WarningKind = Literal[
    "escape_sequences",
    "control_characters",
    "bidi_control",
    "invisible_characters",
    "role_line",
    "protocol_marker",
    "more_warnings",
]

# Warnings per text beyond which one "more_warnings" stands for the rest: output with a
# hidden character on every line would otherwise flood the reader the warnings protect.
MAX_WARNINGS = 20
EXCERPT_CHARS = 60

# Escape sequences, ECMA-48. String commands (OSC, DCS, SOS, PM, APC) end at BEL or ST; one
# left open ends at the end of its line, so a stray introducer cannot swallow the rest of the
# output. The 8-bit forms (U+0090, U+009B...) are the same commands in one code point.
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
_CSI = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
_SHORT = r"\x1b[ -/]*[0-~]"
_ESCAPE = re.compile(f"{_STRING}|{_CSI}|{_SHORT}")

# C0 and C1 controls and DEL, except the newline and tab that lay text out.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_TAG_CHARACTERS = re.compile("[\U000e0000-\U000e007f]")

# Bidirectional formatting characters: embeddings, overrides, isolates and marks.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# A line that starts (after blanks and markdown decoration) as a transcript turn. Capitalised
# or upper case only: "user: deploy" is a line of YAML far more often than an impostor.
_ROLE = re.compile(
    r"^[ \t>#*_`-]*(?:User|USER|Assistant|ASSISTANT|System|SYSTEM|Human|HUMAN)[ \t]*(?:\*\*)?:",
    re.MULTILINE,
)
_PROTOCOL = re.compile(
    # Special tokens of chat templates: <|im_start|>, <|endoftext|>, <|eot_id|>.
    r"<\|[A-Za-z0-9_.:-]{1,40}\|>"
    # Tags of tool-use transcripts, opening or closing, namespaced or not.
    r"|</?(?:[a-z]{1,12}:)?(?:function_results|function_calls|function_result|invoke|parameter"
    r"|tool_use|tool_result|tool_call|tool_response|system|system-reminder)\b[^>\n]{0,80}>"
    # A JSON-RPC message, as MCP speaks it.
    r"""|["']jsonrpc["'][ \t]*:[ \t]*["']2\.0["']"""
)

# Words without which neither expression above can match (a test holds them to it): a page is
# searched for these in one pass, and the expressions run only on the lines that hold one.
_IMPOSTOR_CUES = Cues(
    [
        *("User", "USER", "Assistant", "ASSISTANT", "System", "SYSTEM", "Human", "HUMAN"),
        *("<|", "jsonrpc", "function_result", "function_call", "invoke", "parameter"),
        *("tool_use", "tool_result", "tool_call", "tool_response", "system"),
    ]
)

# Bytes of UTF-8 that are no C0 control or DEL: printable ASCII, newline and tab, and every byte
# of a multi-byte character (among which the C1 controls U+0080..U+009F, \xc2\x80..\xc2\x9f).
_NOT_C0 = bytes(range(0x20, 0x7F)) + b"\n\t" + bytes(range(0x80, 0x100))
_C1 = re.compile(rb"\xc2[\x80-\x9f]")
_ASCII = bytes(range(0x80))


# Token formats with a recognisable shape, beyond those audit.redaction already hides (AWS
# access key ids, private keys, password=..., bearer tokens). Exact lengths and prefixes, so
# that identifiers which merely resemble them are left alone (tests hold the near misses).
@dataclass(frozen=True)
class Flag:
    """Something :func:`clean` removed or found suspicious, at a line of the cleaned text."""

    kind: WarningKind
    line: int
    # A slice of the text (hidden characters as they are); ``shown`` writes them visibly.
    excerpt: str
    # How many occurrences this warning stands for: removed sequences or characters, or
    # warnings left unlisted; 1 for a flagged line.
    count: int = 1

    @property
    def shown(self) -> str:
        """The excerpt with every hidden or control character written as ``<U+XXXX>``."""
        return visible_text(self.excerpt)


@dataclass(frozen=True)
class Cleaned:
    """Output as a model may see it, what was flagged, and how many secrets it hides."""

    text: str
    warnings: list[Flag] = field(default_factory=list)
    redactions: int = 0


def visible_text(text: str) -> str:
    """``text`` with each hidden or control character replaced by ``<U+XXXX>``, the rest as it is."""
    # is_hidden covers the controls too (category Cc), newline and tab aside.
    return "".join(f"<{code_point(c)}>" if is_hidden(c) else c for c in text)


def _excerpt(text: str, start: int = 0) -> str:
    # Only ASCII blanks are trimmed: a leading no-break space or line separator is shown.
    return text[max(0, start - 10) : max(0, start - 10) + EXCERPT_CHARS].strip(" \t")


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def redact_output(text: str) -> str:
    """Secret-shaped strings hidden: the audit's patterns and the token formats above."""
    return redact(text)


def _removed(text: str) -> tuple[str, list[Flag]]:
    """``text`` without escape sequences and control characters, and one warning for each kind removed."""
    flags: list[Flag] = []
    # Looked for in the UTF-8 bytes: a C0 control (ESC is one) by deleting every other byte, a
    # C1 control (the 8-bit introducers are ones) by its two-byte form; far cheaper than _CONTROL.
    data = text.encode("utf-8", "surrogatepass")
    c0 = bool(data.translate(None, _NOT_C0))
    c1 = not text.isascii() and _C1.search(data) is not None
    sequences = list(_ESCAPE.finditer(text)) if c0 or c1 else []
    if sequences:
        first = sequences[0]
        flags.append(
            Flag(
                "escape_sequences",
                _line_at(text, first.start()),
                redact_output(first.group()[:EXCERPT_CHARS]),
                len(sequences),
            )
        )
        text = _ESCAPE.sub("", text)
    controls = list(_CONTROL.finditer(text)) if c0 or c1 else []
    if controls:
        first = controls[0]
        flags.append(Flag("control_characters", _line_at(text, first.start()), first.group(), len(controls)))
        text = _CONTROL.sub("", text)
    return text, flags


def _by_line(kind: WarningKind, text: str, matches: Iterator[re.Match[str]]) -> tuple[list[Flag], int]:
    """One flag per line holding a match (the excerpt from that line, around the first), and how
    many more lines held one past ``MAX_WARNINGS`` (counted, not described: never listed)."""
    flags: list[Flag] = []
    unlisted = 0
    line, counted_to, last_line = 1, 0, 0
    for match in matches:
        line += text.count("\n", counted_to, match.start())
        counted_to = match.start()
        if line == last_line:
            continue
        last_line = line
        if len(flags) >= MAX_WARNINGS:
            unlisted += 1
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.start())
        whole = text[line_start : line_end if line_end >= 0 else len(text)]
        flags.append(Flag(kind, line, _excerpt(whole, match.start() - line_start)))
    return flags, unlisted


def _occurrences(chars: set[str], text: str) -> Iterator[re.Match[str]]:
    if not chars:
        return iter(())
    return re.finditer("[" + "".join(re.escape(c) for c in sorted(chars)) + "]", text)


def _line_flags(text: str) -> tuple[list[Flag], int]:
    """Flags for hidden characters and impostor lines in line order, and how many were left unlisted.

    Output up to a 1 MiB page goes through here on every call: hidden characters are found
    among the text's distinct characters, and the impostor expressions run only on the lines
    holding one of their cue words (``_IMPOSTOR_CUES``).
    """
    # Each distinct character is looked at once, however long the text; only the non-ASCII ones
    # can be hidden, and deleting the ASCII bytes of the UTF-8 leaves those whole.
    hidden: set[str] = set()
    if not text.isascii():
        rest = text.encode("utf-8", "surrogatepass").translate(None, _ASCII).decode("utf-8", "surrogatepass")
        hidden = {c for c in set(rest) if is_hidden(c)}
    bidi = hidden & _BIDI
    invisible = {c for c in hidden - _BIDI if unicodedata.category(c) != "Zs"}
    # Impostors are looked for in the text as a model reads it: "Assis\u200btant:" is still one.
    plain = text.translate(dict.fromkeys(map(ord, hidden))) if hidden else text
    # Both expressions are searched only in the lines that hold one of their words.
    cued = _IMPOSTOR_CUES.positions(plain)
    found = [
        _by_line("bidi_control", text, _occurrences(bidi, text)),
        _by_line("invisible_characters", text, _occurrences(invisible, text)),
        _by_line("role_line", plain, in_lines(_ROLE, plain, cued)),
        _by_line("protocol_marker", plain, in_lines(_PROTOCOL, plain, cued)),
    ]
    flags = sorted((flag for listed, _ in found for flag in listed), key=lambda flag: flag.line)
    return flags, sum(unlisted for _, unlisted in found)


def clean(raw: str, *, redacted: bool = False) -> Cleaned:
    """What of ``raw`` a model may see, the warnings about it, and the count of ``[REDACTED]`` markers.

    ``redacted``: ``raw`` already went through :func:`audit.redaction.redact` (a kept output's
    page does, where it is read); it is redacted again only if removing something could have
    joined a secret's pieces (a token split by escape sequences).
    """
    if not raw:
        return Cleaned(raw)
    text = raw.replace("\r\n", "\n").replace("\r", "\n") if "\r" in raw else raw
    text, warnings = _removed(text)
    if not redacted or text != raw:
        text = redact_output(text)
    by_line, unlisted = _line_flags(text)
    warnings += by_line
    if len(warnings) > MAX_WARNINGS or unlisted:
        left_out = len(warnings) - MAX_WARNINGS + unlisted
        listed = warnings[:MAX_WARNINGS]
        # At the last line listed: the ones left out are at it or past it.
        warnings = [*listed, Flag("more_warnings", listed[-1].line, "", left_out)]
    # Tag characters are U+E0000..U+E007F, \xf3\xa0\x80\x80..\xf3\xa0\x81\xbf in UTF-8: looked
    # for as bytes first, as the expression alone would try every character of the page.
    if not text.isascii() and b"\xf3\xa0" in text.encode("utf-8", "surrogatepass"):
        text = _TAG_CHARACTERS.sub(lambda m: f"<{code_point(m.group())}>", text)
    # A marker starts with its bracket: looking for that one character is a memchr.
    return Cleaned(text, warnings, text.count(REDACTED) if "[" in text else 0)


# -- pages that need nothing ------------------------------------------------------------------


def is_plain(data: bytes, secrets: Sequence[str] = ()) -> bool:
    """Whether the text of ``data`` is one that neither :func:`audit.redaction.redact` (with
    ``secrets``) nor :func:`clean` would change or flag; :func:`plain` then stands for both.

    True only for ASCII (nothing hidden, no C1 control, no tag character) without a C0 control
    or DEL (``\\r`` and ESC are ones), holding in any case none of the cue words without which
    no redaction or impostor expression matches, nor any of the ``secrets``. Each step on its
    own encodes the text and searches it again; this is one pass of each kind over the bytes
    (about 0.75 ms for a 1 MiB page against 1.45 for redaction and cleaning that find nothing).
    A "no" only means the full steps must run.
    """
    if not data.isascii() or data.translate(None, _NOT_C0):
        return False
    return not _plain_cues(tuple(s for s in redactable(secrets) if s.isascii())).occur_in(data.lower())


@lru_cache(maxsize=256)
def _plain_cues(secrets: tuple[str, ...]) -> Cues:
    # Lower-cased, to be found in the lower-cased bytes: a superset of what each step looks for
    # (the impostor words are case-sensitive there, and so are the secrets).
    return Cues([*CUE_WORDS, *(word.lower() for word in _IMPOSTOR_CUES.words), *(s.lower() for s in secrets)])


def plain(text: str) -> Cleaned:
    """What :func:`clean` makes of a text :func:`is_plain` vouched for: the text, nothing flagged."""
    return Cleaned(text, [], text.count(REDACTED) if "[" in text else 0)
