"""Which of a fixed set of literal words occur in a text, and where: one pass for all of them.

Redaction and output hygiene run regular expressions over every byte a model can read, pages
of up to 1 MiB. Each expression needs a literal word to match at all (``password``, ``BEGIN``,
``Assistant``, ``<|``), and most output holds none of them. Asking Python which words occur
costs about 1 ms per word and MiB with ``in`` (redaction alone has 25), and Python's ``re``
spends 5-25 ms per MiB on an expression that matches nothing, because it tries it at every
position. An Aho-Corasick automaton (ahocorasick-rs: Rust's aho-corasick crate, with its
SIMD prefilter) finds them all in one pass, well under a millisecond per MiB of output that
holds none, so a page pays for an expression only where its words are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from re import Match, Pattern

from ahocorasick_rs import BytesAhoCorasick, MatchKind


class Cues:
    """A fixed set of ASCII words found in one pass: case-sensitive, or ``any_case`` for lower-case words."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(dict.fromkeys(words))
        if not all(word and word.isascii() for word in self.words):
            raise ValueError("cue words are ASCII, and not empty")
        # Leftmost-longest and non-overlapping: the automaton can then skip ahead with SIMD
        # (about 0.05 ms per MiB of text holding none of the words, against 2-4 ms for the
        # overlapping search). An occurrence is left unreported only when it starts inside a
        # reported one; ``_overlapping`` makes ``found`` count such words too, and for
        # ``positions`` the reported one stands on the same line.
        kind = MatchKind.LeftmostLongest
        self._bytes = BytesAhoCorasick([word.encode() for word in self.words], matchkind=kind)
        self._overlapping = tuple(
            frozenset(other for other in self.words if _may_start_inside(other, word)) for word in self.words
        )

    def hits(self, text: str, *, any_case: bool = False) -> Hits:
        """The words in ``text``, and where (``any_case``: in any case, as ``re.IGNORECASE`` sees
        it, for lower-case words)."""
        if any_case and not text.isascii() and any(c in text for c in _FOLD_CHARACTERS):
            # The four characters that case-insensitive expressions take for ASCII letters:
            # searched as those letters (one character for one, so the offsets still hold).
            text = text.translate(_FOLDS_TO_ASCII)
        # Over the UTF-8 bytes: bytes.lower changes only ASCII letters, which is all the words
        # hold, and the automaton's SIMD search works on bytes.
        data = text.encode("utf-8", "surrogatepass")
        at = self._search(data.lower() if any_case else data)
        if not text.isascii():  # byte offsets to character offsets
            starts = _char_offsets(data, [start for _, start in at])
            at = [(words, start) for (words, _), start in zip(at, starts, strict=True)]
        return Hits(frozenset().union(*(words for words, _ in at)), at)

    def _search(self, data: bytes) -> list[tuple[frozenset[str], int]]:
        matches = self._bytes.find_matches_as_indexes(data)
        return [(self._overlapping[index], start) for index, start, _ in matches]

    def occur_in(self, data: bytes) -> bool:
        """Whether any of the words occurs in ``data``, bytes compared as they are (lower-case
        ``data`` first for lower-case words in any case)."""
        # Leftmost-longest reports the leftmost occurrence of any word: never nothing when one occurs.
        return bool(self._bytes.find_matches_as_indexes(data))

    def found(self, text: str, *, any_case: bool = False) -> frozenset[str]:
        """Every word that occurs in ``text``, and perhaps some that do not (never fewer)."""
        return self.hits(text, any_case=any_case).found

    def positions(self, text: str) -> list[int]:
        """Where in ``text`` occurrences of the words start, in order: every line holding one holds
        one of these (an occurrence inside another is not listed)."""
        return [start for _, start in self.hits(text).at]


@dataclass(frozen=True)
class Hits:
    """What :meth:`Cues.hits` found: never fewer words than occur."""

    found: frozenset[str]
    # Each reported occurrence's start (a character offset into the text) with the words that
    # may occur there.
    at: list[tuple[frozenset[str], int]]


# The only characters Python's re.IGNORECASE matches to an ASCII letter: U+0130 and U+0131
# ("i"), U+017F, the long s, and U+212A, the Kelvin sign ("k").
_FOLDS_TO_ASCII = {0x130: "i", 0x131: "i", 0x17F: "s", 0x212A: "k"}
_FOLD_CHARACTERS = tuple(map(chr, _FOLDS_TO_ASCII))

# UTF-8's continuation bytes: every other byte starts a character.
_CONTINUATION = bytes(range(0x80, 0xC0))


def _char_offsets(data: bytes, starts: list[int]) -> list[int]:
    """Character offsets of the byte offsets ``starts`` (ascending, each at a character's start)
    into UTF-8 ``data``: the bytes before each that start a character, counted stretch by stretch."""
    offsets: list[int] = []
    chars = done = 0
    for start in starts:
        chars += len(data[done:start].translate(None, _CONTINUATION))
        done = start
        offsets.append(chars)
    return offsets


def _may_start_inside(other: str, word: str) -> bool:
    """Whether an occurrence of ``other`` can start inside an occurrence of ``word`` (itself included)."""
    return any(word[i:].startswith(other) or other.startswith(word[i:]) for i in range(len(word)))


def in_lines(pattern: Pattern[str], text: str, positions: Iterable[int]) -> Iterator[Match[str]]:
    """``pattern``'s matches in the lines of ``text`` that hold one of ``positions``, in order.

    For expressions that never cross a line end: the same matches as ``pattern.finditer(text)``
    when every match holds one of the positions, found without scanning the other lines.
    """
    end = -1
    for position in sorted(positions):
        if position < end:
            continue
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        end = len(text) if end < 0 else end
        # At a line's start ``^`` (MULTILINE) matches, as it would in the whole text.
        yield from pattern.finditer(text, start, end)
