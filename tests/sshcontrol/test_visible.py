"""Hidden characters made visible: what every admin page that shows a command relies on."""

from __future__ import annotations

import pytest

from hosts.visible import hidden_characters, is_hidden, one_line, visible_html


@pytest.mark.parametrize(
    "char",
    ["\u2066", "\u2067", "\u2068", "\u2069", "\u202a", "\u202e", "\u200b", "\u200d", "\u2060", "\ufeff",
     "\u00ad", "\u061c", "\u00a0", "\u2003", "\u3000", "\u2028", "\u2029", "\r", "\x1b", "\x7f", "\x85",
     "\u3164", "\ufe0f", "\U000e0041", "\ue000", "\u2800"],
)  # fmt: skip
def test_it_finds_invisible_reordering_and_control_characters(char: str) -> None:
    assert is_hidden(char)
    assert f"&lt;U+{ord(char):04X}&gt;" in visible_html(f"a{char}b")
    assert char not in visible_html(f"a{char}b")


@pytest.mark.parametrize("char", [" ", "\n", "\t", "a", "ü", "ש", "✓", "-", "#"])
def test_it_leaves_ordinary_characters_alone(char: str) -> None:
    assert not is_hidden(char)


def test_it_escapes_html_and_marks_each_hidden_character() -> None:
    html = str(visible_html("echo <b>&\u2067; touch x\u2069"))
    assert "&lt;b&gt;&amp;" in html and "<b>" not in html
    assert html.count('class="sc-hidden-char"') == 2
    assert 'title="U+2067 RIGHT-TO-LEFT ISOLATE"' in html
    assert "unicode-bidi:bidi-override" in html  # laid out in the order the shell reads it


def test_it_names_each_hidden_character_once_in_order() -> None:
    assert hidden_characters("a\u2067b\u200bc\u2067") == [
        "U+2067 RIGHT-TO-LEFT ISOLATE",
        "U+200B ZERO WIDTH SPACE",
    ]
    assert hidden_characters("ls -la\n") == []


def test_one_line_keeps_unusual_spaces_for_the_page_to_show() -> None:
    assert one_line("  ls \t -la\n\nid\u00a0x\r ") == "ls -la id\u00a0x\r"


def test_it_keeps_the_page_small_for_output_full_of_control_characters() -> None:
    html = str(visible_html("\x1b[31mred\x1b[0m" * 5000))
    assert html.count('class="sc-hidden-char"') == 1000
    assert html.count("&lt;U+001B&gt;") == 10_000
    assert len(html) < 1_000_000
