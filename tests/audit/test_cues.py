"""The cue words that let redaction and hygiene skip their expressions skip nothing they would match."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

import audit.output_hygiene as hygiene
import audit.redaction as redaction
from audit.cues import Cues, in_lines

_IMPOSTOR_PIECES = st.sampled_from(
    [
        "User:",
        "USER :",
        "  > **Assistant**:",
        "System:",
        "SYSTEM:",
        "Human:",
        "user:",
        "Sys",
        "tem:",
        "<|im_start|>",
        "<|",
        "|>",
        "<function_results>",
        "</function_calls>",
        "<invoke name='x'>",
        "</parameter>",
        "<tool_result id=1>",
        "<system-reminder>",
        "<system>",
        '"jsonrpc": "2.0"',
        "'jsonrpc':'2.0'",
        "jsonrpc",
        "<",
        ">",
        ":",
        "\n",
        " ",
        "\t",
        "#",
        "-",
        "*",
        "`",
        "é",
        "\u200b",
    ]
)
_IMPOSTOR_TEXT = st.lists(st.one_of(_IMPOSTOR_PIECES, st.text(max_size=6)), max_size=30).map("".join)


def _spans(matches: object) -> list[tuple[int, int]]:
    return [m.span() for m in matches]  # type: ignore[attr-defined]


@settings(max_examples=600, deadline=None)
@given(_IMPOSTOR_TEXT)
def test_impostor_expressions_match_only_where_their_cue_words_are(text: str) -> None:
    cued = hygiene._IMPOSTOR_CUES.positions(text)
    for pattern in (hygiene._ROLE, hygiene._PROTOCOL):
        assert _spans(in_lines(pattern, text, cued)) == _spans(pattern.finditer(text))


_SECRET_PIECES = st.sampled_from(
    [
        "password=",
        "PASSWD: ",
        "pwd=",
        "Secret: ",
        "token=",
        "API_KEY=",
        "sshpass -p ",
        "--db-password ",
        "Authorization: Bearer ",
        "bearer ",
        "identified by ",
        "https://me:",
        "@host",
        "sshc_",
        "AKIA",
        "ASIA",
        "IOSFODNN7EXAMPLE",
        "ghp_",
        "github_pat_",
        "glpat-",
        "xoxb-123456-",
        "eyJ",
        ".",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "'",
        '"',
        "\n",
        " ",
        "abcdefgh12345678",
        "\u017f",
        "\u0131",
        "\u0130",
        "\u212a",
        "pa\u017f\u017fword=",
    ]
)
_SECRET_TEXT = st.lists(st.one_of(_SECRET_PIECES, st.text(max_size=6)), max_size=30).map("".join)


def _every_pattern(text: str) -> str:
    for pattern, replacement, _ in redaction._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=600, deadline=None)
@given(_SECRET_TEXT)
def test_redaction_skips_only_patterns_that_could_not_have_matched(text: str) -> None:
    assert redaction.redact(text) == _every_pattern(text)


def test_cues_find_every_word_even_inside_another() -> None:
    cues = Cues(["sshpass", "password", "pass"])
    assert cues.found("x sshpassword=") == {"sshpass", "password", "pass"}
    assert cues.positions("pass\nsshpass") == [0, 5]
    assert cues.found("nothing here") == frozenset()


def test_positions_are_character_indexes_in_text_that_is_not_ascii() -> None:
    text = "é€ Assistant: x"
    assert Cues(["Assistant"]).positions(text) == [text.index("Assistant")]


def test_in_lines_searches_only_the_lines_asked_for() -> None:
    pattern = re.compile(r"^x+$", re.MULTILINE)
    text = "xx\nyy\nxxx\nxxxx"
    assert [m.group() for m in in_lines(pattern, text, [7])] == ["xxx"]
    assert [m.group() for m in in_lines(pattern, text, [0, 1, 12])] == ["xx", "xxxx"]


def test_text_with_a_lone_surrogate_or_case_folding_characters_is_searched_too() -> None:
    text = "\udcff\nUser: x \u212aey"
    assert Cues(["User"]).positions(text) == [text.index("User")]
    # re.IGNORECASE takes the Kelvin sign for "k", the long s for "s", dotless i for "i".
    assert Cues(["key"]).found(text, any_case=True) == {"key"}
    folded = "é pa\u017f\u017fword=x \u0131dentified"
    at = Cues(["password", "identified"]).hits(folded, any_case=True).at
    assert [start for _, start in at] == [folded.index("pa"), folded.index("\u0131")]
    accented = "café ✓ Authorization: x\nnaïve token"
    at = Cues(["authorization", "token"]).hits(accented, any_case=True).at
    assert [start for _, start in at] == [accented.index("Authorization"), accented.index("token")]


def test_a_secret_spelt_with_case_folding_characters_is_redacted() -> None:
    assert redaction.redact("pa\u017f\u017fword=hunter22\n") == "pa\u017f\u017fword=[REDACTED]\n"


_WORDS = ["sshpass", "password", "pass", "ss", "word", "--", "a", "api", "pi_"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from([*_WORDS, "x", "\n", "p", "s"]), max_size=25).map("".join))
def test_found_never_misses_a_word_that_occurs(text: str) -> None:
    cues = Cues(_WORDS)
    assert cues.found(text) >= {word for word in _WORDS if word in text}
    positions = cues.positions(text)
    assert positions is not None
    lines = {text.count("\n", 0, p) for p in positions}
    for word in _WORDS:
        for start in (m.start() for m in re.finditer(f"(?={re.escape(word)})", text)):
            assert text.count("\n", 0, start) in lines


_PAGE_PIECES = st.one_of(
    _SECRET_PIECES,
    _IMPOSTOR_PIECES,
    st.sampled_from(["hunter22", "HUNTER22", "[REDACTED]", "\r\n", "\r", "\x1b[31m", "\x07", "\x7f", "\x00"]),
    st.sampled_from(["\x9b", "\u202e", "\U000e0041", "0123456789", "ok\n", "a-b_c"]),
    st.text(st.characters(max_codepoint=0x7F), max_size=8),
)
_PAGE_TEXT = st.lists(_PAGE_PIECES, max_size=30).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_PAGE_TEXT, st.sampled_from([(), ("hunter22",), ("hunter22", "ab"), ("x\u00e9\u00e9y",)]))
def test_a_page_found_plain_is_what_redaction_and_cleaning_make_of_it(
    text: str, secrets: tuple[str, ...]
) -> None:
    data = text.encode("utf-8", "surrogatepass")
    if not hygiene.is_plain(data, secrets):
        return
    assert redaction.redact(text, secrets) == text
    assert hygiene.clean(text) == hygiene.clean(text, redacted=True) == hygiene.plain(text)


def test_a_page_is_not_plain_with_anything_to_redact_or_clean() -> None:
    assert hygiene.is_plain(b"12\n34\tok [REDACTED]\n")
    assert hygiene.plain("12\n34 [REDACTED]\n").redactions == 1
    for data in (b"db PassWord=x", b"User: hi", b"user: yaml", b"a\rb", b"\x1b[0m", b"\x00", b"caf\xc3\xa9"):
        assert not hygiene.is_plain(data), data
    # The host's secret, in any case (a superset of redaction's exact match), and only from 4 characters.
    assert not hygiene.is_plain(b"login HUNTER22 ok", ("hunter22",))
    assert hygiene.is_plain(b"login ab ok", ("ab",))
