"""Command-rule matching: normalisation, segments and decisions (pure functions, no database)."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hosts.policy import (
    Decision,
    PatternError,
    Rule,
    Verdict,
    allow_listed,
    compile_pattern,
    decide,
    first_match,
    normalise,
    segments,
)

LS = Rule("allow", r"ls( .*)?", "grant 1")
ECHO = Rule("allow", r"echo( .*)?", "grant 1")
RM_RF = Rule("deny", r"rm\s+-rf", "host web1")
REBOOT = Rule("approve", r"reboot|shutdown", "tag prod")


def verdict(command: str, rules: list[Rule], allow_list_required: bool = True) -> str:
    return decide(command, rules, allow_list_required).verdict


# --- compile_pattern ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("a" * 2001, "limit is 2000"),
        ("(", "Not a valid regular expression"),
        ("[z-a]", "bad character range"),
    ],
)
def test_it_rejects_unusable_patterns_with_a_clear_message(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=re.escape(message)):
        compile_pattern(pattern)


def test_it_rejects_patterns_too_deep_to_compile() -> None:
    with pytest.raises(PatternError, match="too complex"):
        compile_pattern("(" * 1000 + ")" * 1000)


def test_it_compiles_and_caches_valid_patterns() -> None:
    assert compile_pattern(r"ls( .*)?") is compile_pattern(r"ls( .*)?")
    assert compile_pattern("a" * 2000).fullmatch("a" * 2000)


# --- normalise and segments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("  ls \t -la  ", "ls -la"),
        ("ls\r\nrm x\rcat y", "ls\nrm x\ncat y"),
        ("r\\\nm -rf /", "rm -rf /"),
        ("r\x00m -rf /", "rm -rf /"),
        ("\uff52\uff4d -rf /", "rm -rf /"),  # fullwidth r and m
        ("ls\u00a0-la", "ls -la"),  # no-break space
        ("ls\n\n  \nrm", "ls\nrm"),
        # Not continuations on the remote shell: the backslash escapes a CR, or is NFKC's doing.
        ("ls \\\r\nrm", "ls \\\\\nrm"),
        ("ls \uff3c\nrm", "ls \\\\\nrm"),
        ("echo \\\\\nrm", "echo \\\\\nrm"),  # an escaped backslash, then a real newline
    ],
)
def test_it_normalises_what_rules_see(command: str, expected: str) -> None:
    assert normalise(command) == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("ls; rm -rf /", ("ls", "rm -rf /")),
        ("a && b || c | d & e", ("a", "b", "c", "d", "e")),
        ("a&&b||c|d&e\nf", ("a", "b", "c", "d", "e", "f")),
        ("ls 2>&1 | grep x", ("ls 2>&1", "grep x")),
        ("cat <&3 >| out", ("cat <&3 >| out",)),
        ("ls $(rm x)", ("rm x", "ls $()")),
        ("ls `rm x`", ("rm x", "ls $()")),
        ("echo $(a $(b) c)", ("b", "a $() c", "echo $()")),
        ("diff <(sort a) >(tee b)", ("sort a", "tee b", "diff <() >()")),
        ('echo "$(id)"', ("id", 'echo "$()"')),
        ("echo $((1 + 2))", ("(1 + 2)", "echo $()")),
        ("echo $(rm x", ("rm x", "echo $()")),  # unclosed: the body runs to the end
        (";; & |", ()),
    ],
)
def test_it_splits_commands_into_segments(command: str, expected: tuple[str, ...]) -> None:
    assert segments(command) == expected


# --- decide: examples -----------------------------------------------------------------------------


def test_it_allows_an_allow_listed_command() -> None:
    assert decide("ls -la /tmp", [LS, RM_RF], True) == Decision(
        Verdict.ALLOW, "command allowed by the allow-list"
    )


def test_it_lets_deny_beat_allow() -> None:
    allow_everything = Rule("allow", ".*", "grant 1")
    decision = decide("rm -rf /", [allow_everything, RM_RF], True)
    assert decision == Decision(Verdict.DENY, r"command denied by rule /rm\s+-rf/ (host web1)", RM_RF)


@pytest.mark.parametrize(
    "command",
    [
        "ls\nrm -rf /",
        "ls; rm -rf /",
        "ls && rm -rf /",
        "ls || rm -rf /",
        "ls | rm -rf /",
        "ls & rm -rf /",
        "ls $(rm -rf /)",
        "ls `rm -rf /`",
        "ls $(echo $(rm -rf /))",
        "ls <(rm -rf /)",
        "ls >(rm -rf /)",
        "ls\r\nrm -rf /",
        "ls\rrm -rf /",
        "r\\\nm -rf /",
        "r\x00m -rf /",
        "ls\x00; rm -rf /",
        "\uff52\uff4d -rf /",
        "ls;\u3000rm\u3000-rf /",  # ideographic spaces
    ],
)
def test_it_catches_chained_and_disguised_commands_with_a_deny_rule(command: str) -> None:
    assert verdict(command, [LS, RM_RF]) == "deny"
    assert first_match([RM_RF], command) == RM_RF


@pytest.mark.parametrize(
    "command",
    [
        "ls\nrm x",
        "ls; rm x",
        "ls && rm x",
        "ls || rm x",
        "ls | rm x",
        "ls & rm x",
        "ls $(rm x)",
        'ls "$(rm x)"',
        "ls `rm x`",
        "ls $(ls $(rm x))",
        "ls <(rm x)",
        "ls >(rm x)",
        "ls\r\nrm x",
        "ls \\\r\nrm x",
        "ls \uff3c\nrm x",
        "ls &>x rm x",  # POSIX sh: `ls &` then `>x rm x`
        "ls # a comment \\\nrm x",  # a backslash ends no comment: rm runs
        "$(echo rm) x",  # the substitution's output is the command
    ],
)
def test_it_keeps_a_newline_or_operator_from_walking_past_the_allow_list(command: str) -> None:
    assert not allow_listed([LS], command)
    decision = decide(command, [LS], True)
    assert decision.verdict == "deny"
    assert decision.reason.startswith("command is not on the allow-list")


def test_it_joins_a_continuation_after_a_quoted_hash_for_deny_rules() -> None:
    # If the `#` is quoted the shell joins the lines and runs `rm -rf /`; if it starts a comment,
    # `r\` and `m -rf /` run. The deny rule sees the first reading, the allow-list both.
    command = 'echo "x #"; r\\\nm -rf /'
    assert first_match([RM_RF], command) == RM_RF
    assert not allow_listed([ECHO], command)


def test_it_does_not_split_redirections() -> None:
    assert verdict("ls -la 2>&1", [LS]) == "allow"
    assert verdict("ls -la >&2", [LS]) == "allow"
    assert verdict("ls -la 2>&1 | ls", [LS]) == "allow"


def test_it_names_the_segment_that_is_not_allowed() -> None:
    reason = decide("ls; cat /etc/shadow", [LS], True).reason
    assert '"cat /etc/shadow" matches no allow rule' in reason


def test_it_asks_for_approval_when_an_approve_rule_matches() -> None:
    assert decide("sudo reboot", [REBOOT], False) == Decision(
        Verdict.APPROVE, "command requires an admin's approval by rule /reboot|shutdown/ (tag prod)", REBOOT
    )
    assert verdict("uptime; reboot", [REBOOT], allow_list_required=False) == "approve"
    assert verdict("uptime $(reboot)", [REBOOT], allow_list_required=False) == "approve"


def test_it_checks_the_allow_list_before_approval() -> None:
    assert verdict("reboot", [LS, REBOOT], allow_list_required=False) == "deny"
    assert verdict("reboot", [Rule("allow", "reboot", "grant 1"), REBOOT]) == "approve"


def test_it_lets_deny_beat_approve() -> None:
    assert verdict("reboot; rm -rf /", [REBOOT, RM_RF], allow_list_required=False) == "deny"


def test_it_allows_anything_not_denied_without_an_allow_list() -> None:
    assert decide("uptime", [RM_RF], False) == Decision(Verdict.ALLOW, "command allowed")
    assert verdict("uptime", [], allow_list_required=False) == "allow"


def test_it_denies_everything_when_an_allow_list_is_required_but_empty() -> None:
    assert decide("ls", [RM_RF], True) == Decision(
        Verdict.DENY, "command is not on the allow-list: no allow rules apply here"
    )
    assert not allow_listed([], "ls")


@pytest.mark.parametrize("command", ["", "   ", "\n\r\n\t", "\x00\x01", "\\\n"])
def test_it_denies_an_empty_command(command: str) -> None:
    assert decide(command, [Rule("allow", ".*", "grant 1")], False) == Decision(Verdict.DENY, "empty command")


def test_it_fails_closed_on_a_pattern_that_no_longer_compiles() -> None:
    # Stored before validation existed, say: deny/approve match everything, allow matches nothing.
    assert decide("uptime", [Rule("deny", "(", "host web1")], False).reason == (
        "command denied by rule /(/ (host web1) (not a valid pattern: an admin must fix it)"
    )
    assert verdict("uptime", [Rule("approve", "[", "tag prod")], allow_list_required=False) == "approve"
    assert verdict("ls", [Rule("allow", "(", "grant 1")], allow_list_required=False) == "deny"
    assert verdict("ls", [Rule("allow", "(", "grant 1"), LS], allow_list_required=False) == "allow"


def test_it_treats_an_unknown_action_as_deny() -> None:
    assert verdict("ls", [LS, Rule("Deny ", "ls", "host web1")]) == "deny"


def test_it_keeps_reasons_on_one_line() -> None:
    rule = Rule("deny", "x\ny", "host\nweb1")
    assert "\n" not in decide("x\ny", [rule], False).reason
    assert "\n" not in decide("ls; cat\u2028x", [LS], False).reason


def test_it_copes_with_huge_input() -> None:
    command = "ls -la; " * 100_000 + "$(" * 10_000 + "\\\n" * 10_000 + "x" * 1_000_000
    assert verdict(command, [LS, RM_RF]) == "deny"


# --- decide: properties ---------------------------------------------------------------------------

# Text rich in the characters that matter, mixed with arbitrary (surrogate-free) text.
SPECIAL = ["\x00", "\x0b", "\u0301", "\u0338", "\uff3c", "\uff1b", "\u00a0"]  # NUL, VT, marks, fullwidth
SHELLISH = st.text(alphabet=st.sampled_from([*"lsrm -xyz/;&|()<>$`\\\n\r\t#'\"=", *SPECIAL]), max_size=40)
TEXT = st.one_of(SHELLISH, st.text(max_size=40), st.tuples(SHELLISH, st.text(max_size=10)).map("".join))
PATTERNS = st.one_of(
    st.sampled_from([r"ls( .*)?", r"rm\s+-rf", r"^rm\b", r".*", r"\$\(", r"[;&|]", r"x+", r"\\", "#"]),
    st.text(min_size=1, max_size=10).map(re.escape),
    st.sampled_from(["(", "[", "", "a" * 2001]),  # stored invalid patterns
)
RULES = st.lists(
    st.builds(Rule, st.sampled_from(["allow", "deny", "approve", "bogus"]), PATTERNS, st.just("tag t")),
    max_size=6,
)
SEPARATORS = st.sampled_from(["\n", "\r\n", "\r", ";", "&&", "||", "|", "&"])


@settings(max_examples=200, deadline=None)
@given(command=TEXT)
def test_it_normalises_idempotently(command: str) -> None:
    once = normalise(command)
    assert normalise(once) == once


@settings(max_examples=200, deadline=None)
@given(command=TEXT)
def test_it_never_yields_an_empty_segment_or_one_with_a_line_break(command: str) -> None:
    for segment in segments(command):
        assert segment
        assert segment == segment.strip()
        assert "\n" not in segment
        assert "\r" not in segment
        assert "\x00" not in segment


@settings(max_examples=200, deadline=None)
@given(sep=SEPARATORS, rest=TEXT)
def test_it_allows_ls_and_more_only_when_the_rest_is_allowed(sep: str, rest: str) -> None:
    if verdict("ls" + sep + rest, [LS]) == "allow":
        assert all(re.fullmatch(LS.pattern, segment) for segment in segments(rest))


@settings(max_examples=200, deadline=None)
@given(command=TEXT, rules=RULES, required=st.booleans(), data=st.data())
def test_it_denies_whenever_a_deny_rule_matches_a_segment(
    command: str, rules: list[Rule], required: bool, data: st.DataObject
) -> None:
    found = segments(command)
    assume(found)
    segment = data.draw(st.sampled_from(found))
    at = data.draw(st.integers(0, len(rules)))
    rules.insert(at, Rule("deny", re.escape(segment)[:2000], "host web1"))
    assert verdict(command, rules, required) == "deny"


@settings(max_examples=200, deadline=None)
@given(
    command=st.one_of(TEXT, st.tuples(TEXT, st.integers(1, 3000)).map(lambda t: t[0] * t[1])),
    rules=RULES,
    required=st.booleans(),
)
def test_it_always_decides_without_raising(command: str, rules: list[Rule], required: bool) -> None:
    decision = decide(command, rules, required)
    assert decision.verdict in ("allow", "deny", "approve")
    assert decision.reason
    assert "\n" not in decision.reason
    if decision.verdict == "allow":
        assert first_match([r for r in rules if r.action != "allow"], command) is None
