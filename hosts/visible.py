"""Text shown to a person exactly as a shell reads it: no invisible or reordering characters.

A command can carry characters a browser does not draw, or draws by moving other text:
bidirectional controls (U+202A..U+202E, U+2066..U+2069) made Chromium show
``... # touch x ;`` so that the dangerous part looked commented out, and an admin approved
it. Zero-width characters, unusual spaces and control characters hide in plain sight the
same way. Everywhere the admin shows a command it goes through :func:`visible_html` (the
template filter ``visible``), which replaces each such character with a highlighted
``<U+2067>`` and lays the rest out left to right in the order the shell reads it. The MCP
front refuses such commands unless ``SSHCONTROL_ALLOW_INVISIBLE_CHARACTERS`` is on.
"""

from __future__ import annotations

import re
import unicodedata

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString

# Newlines and tabs are drawn as what they are (in a <pre>; list cells show the first line).
_DRAWN = frozenset("\n\t")
# Unicode categories that draw nothing, or something easily taken for an ordinary space:
# controls, format characters (bidi controls, zero-width characters, tags), line and
# paragraph separators, private-use and surrogate code points. Spaces other than U+0020
# (no-break, en, em, ideographic...) are in Zs and handled below.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs"})
# Default-ignorable code points outside those categories (Unicode's DerivedCoreProperties):
# fillers and variation selectors that render as nothing.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors
    (0x2800, 0x2800),  # braille blank: looks like a space
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # unassigned specials
    (0x1D173, 0x1D17A),  # musical formatting
    (0xE0000, 0xE0FFF),  # tags and variation selectors supplement
)

# ASCII blanks only: ``str.split()`` would also turn no-break, em and other unusual spaces
# (and U+2028) into plain ones, hiding them from the page.
_BLANKS = re.compile(r"[ \t\n]+")

# Highlighted on light and dark themes alike; inline so that it holds in every admin page,
# list cell and message without a stylesheet.
_MARK_STYLE = (
    "background:#ffe082;color:#4a2800;border:1px solid #c77700;border-radius:3px;"
    "padding:0 2px;font-family:monospace;font-weight:600"
)
# Highlighted spans per text at most (each costs some 300 bytes of HTML); later ones are plain.
MAX_MARKED = 1000
# Left to right in storage order, whatever letters the text holds: a person reads the
# characters in the order the shell does (right-to-left words appear spelled backwards).
_TEXT_STYLE = "unicode-bidi:bidi-override;direction:ltr"


def is_hidden(char: str) -> bool:
    """Whether ``char`` draws nothing, moves other text, or passes for an ordinary space."""
    if char in _DRAWN or char == " ":
        return False
    category = unicodedata.category(char)
    if category in _HIDDEN_CATEGORIES or category == "Zs":
        return True
    point = ord(char)
    return any(low <= point <= high for low, high in _IGNORABLE_RANGES)


def one_line(text: str) -> str:
    """``text`` on one line for a list cell or a band: runs of spaces, tabs and newlines as one space.

    A CR stays (the shell reads it as part of a word) and is shown like any hidden character.
    """
    return _BLANKS.sub(" ", text).strip(" ")


def code_point(char: str) -> str:
    """``U+2067``: how a hidden character is written on the page."""
    return f"U+{ord(char):04X}"


def describe(char: str) -> str:
    """``U+2067 RIGHT-TO-LEFT ISOLATE``; the name is left out where Unicode gives none."""
    name = unicodedata.name(char, "")
    return f"{code_point(char)} {name}" if name else code_point(char)


def hidden_characters(text: str) -> list[str]:
    """The distinct hidden characters of ``text``, described, in the order they first occur."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in seen and is_hidden(char):
            seen[char] = None
    return [describe(char) for char in seen]


def refusal(what: str, hidden: list[str]) -> str:
    """The one-line reason a text with ``hidden`` characters is refused (at most three named)."""
    named = ", ".join(hidden[:3]) + (f" and {len(hidden) - 3} more" if len(hidden) > 3 else "")
    return (
        f"{what} contains invisible, reordering or control characters ({named}); remove them "
        "(an administrator may allow them with SSHCONTROL_ALLOW_INVISIBLE_CHARACTERS=1)"
    )


def visible_html(text: str) -> SafeString:
    """``text`` escaped for HTML, each hidden character shown as a highlighted ``<U+XXXX>``."""
    parts: list[SafeString] = []
    plain: list[str] = []
    marked = 0
    for char in text:
        if not is_hidden(char):
            plain.append(char)
            continue
        marked += 1
        if marked > MAX_MARKED:
            # Output full of escape sequences: past this many, plain escapes keep the page small.
            plain.append(f"<{code_point(char)}>")
            continue
        parts.append(escape("".join(plain)))
        plain.clear()
        parts.append(
            format_html(
                '<span class="sc-hidden-char" style="{}" title="{}">&lt;{}&gt;</span>',
                _MARK_STYLE,
                describe(char),
                code_point(char),
            )
        )
    parts.append(escape("".join(plain)))
    # Every part is already escaped (a SafeString), so joining does not escape it again.
    inner = format_html_join("", "{}", ((part,) for part in parts))
    return format_html('<span class="sc-text" style="{}">{}</span>', _TEXT_STYLE, inner)
