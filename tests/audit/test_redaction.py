"""Redaction of known secrets and secret-looking patterns, and capping of long text."""

from __future__ import annotations

import pytest

from audit.redaction import REDACTED, cap, redact
from tests.instructions import MARKER, segments

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx1u0Vq3l7Kk3T9o8t7qS4cWm6pV1+6r4m1m7d0e1VAAAAmJ7d8x2e3fMd\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


def test_it_replaces_known_secrets_longest_first():
    text = "login hunter2-long then hunter2 and hun"
    assert redact(text, ["hunter2", "hunter2-long", "hun"]) == f"login {REDACTED} then {REDACTED} and hun"


def test_it_ignores_empty_and_short_secrets():
    assert redact("a abc abcd", ["", "abc", "a"]) == "a abc abcd"
    assert redact("a abc abcd", ["abcd"]) == f"a abc {REDACTED}"


def test_it_does_not_match_a_secret_inside_an_earlier_replacement():
    assert redact("xx longsecret yy", ["longsecret", "DACT"]) == f"xx {REDACTED} yy"


def test_it_redacts_private_key_blocks_keeping_the_armour():
    out = redact(f"before\n{PEM}\nafter")
    assert "b3BlbnNzaC1" not in out and "QyNTUxOQ" not in out
    armour = "OPENSSH PRIVATE KEY-----"
    assert out == f"before\n-----BEGIN {armour}\n{REDACTED}\n-----END {armour}\nafter"


@pytest.mark.parametrize("kind", ["RSA ", "EC ", "ENCRYPTED ", "", "PGP "])
def test_it_redacts_every_kind_of_private_key(kind):
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    suffix = " BLOCK" if kind == "PGP " else ""
    text = f"-----BEGIN {kind}PRIVATE KEY{suffix}-----\n{body}\n-----END {kind}PRIVATE KEY{suffix}-----"
    assert body not in redact(text)


def test_it_redacts_an_unterminated_private_key_to_the_end():
    out = redact("x\n" + PEM.rsplit("\n", 2)[0] + "\nmore key material")
    assert out == f"x\n-----BEGIN OPENSSH PRIVATE KEY-----\n{REDACTED}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", f"password={REDACTED}"),
        ("passwd: hunter2", f"passwd: {REDACTED}"),
        ("MYSQL_PWD=hunter2 mysql", f"MYSQL_PWD={REDACTED} mysql"),
        ("client_secret=abc&x=1", f"client_secret={REDACTED}&x=1"),
        ("export GITHUB_TOKEN='ghp abc'", f"export GITHUB_TOKEN='{REDACTED}'"),
        ('{"api_key": "k-123", "n": 1}', f'{{"api_key": "{REDACTED}", "n": 1}}'),
        ("API-KEY:xyz", f"API-KEY:{REDACTED}"),
        ('secret = "a b c"', f'secret = "{REDACTED}"'),
    ],
)
def test_it_redacts_key_value_pairs_keeping_the_key(text, expected):
    assert redact(text) == expected


def test_it_does_not_let_a_password_prompt_swallow_the_next_line():
    assert redact("Password:\nuid=0(root)") == "Password:\nuid=0(root)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mysqldump --password hunter2 db", f"mysqldump --password {REDACTED} db"),
        ("mysqldump --password=hunter2 db", f"mysqldump --password={REDACTED} db"),
        ("tool --db-password 'a b' run", f"tool --db-password '{REDACTED}' run"),
        ("psql --no-password -h db", "psql --no-password -h db"),
    ],
)
def test_it_redacts_password_options(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "curl -H 'Authorization: Bearer eyJ0eXAi.eyJzdWIi.c2ln' x",
            f"curl -H 'Authorization: Bearer {REDACTED}' x",
        ),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {REDACTED}"),
        ("token type bearer abcdefgh12345678", f"token type bearer {REDACTED}"),
    ],
)
def test_it_redacts_authorization_headers(text, expected):
    assert redact(text) == expected


def test_it_redacts_our_api_tokens_and_aws_access_keys():
    out = redact("use sshc_Zx8f3kLmN0pQ_rs-tUv and AKIAIOSFODNN7EXAMPLE now")
    assert out == f"use {REDACTED} and {REDACTED} now"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sshpass -p hunter2 ssh web1", f"sshpass -p {REDACTED} ssh web1"),
        ("sshpass -p'two words' ssh web1", f"sshpass -p'{REDACTED}' ssh web1"),
        ("sshpass -v -P assphrase -phunter2 ssh web1", f"sshpass -v -P assphrase -p{REDACTED} ssh web1"),
        ("sshpass -e ssh -p 2222 web1", "sshpass -e ssh -p 2222 web1"),
        ("SSHPASS=hunter2 sshpass -e ssh web1", f"SSHPASS={REDACTED} sshpass -e ssh web1"),
    ],
)
def test_it_redacts_sshpass_passwords(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "git clone https://bob:hunter2@git.example/x.git",
            f"git clone https://bob:{REDACTED}@git.example/x.git",
        ),
        ("redis://:hunter2@127.0.0.1:6379/0", f"redis://:{REDACTED}@127.0.0.1:6379/0"),
        ("postgres://app:p@ss@db/app", f"postgres://app:{REDACTED}@db/app"),
        ("https://example.com:8443/a@b", "https://example.com:8443/a@b"),
        ("ssh://git@github.com/x", "ssh://git@github.com/x"),
    ],
)
def test_it_redacts_credentials_in_urls(text, expected):
    assert redact(text) == expected


def test_it_leaves_ordinary_output_alone():
    text = "total 8\ndrwxr-xr-x 2 root root 4096 Jan  1 00:00 etc\n5 passed, 1 skipped in 0.1s\n"
    assert redact(text, ["nothere"]) == text


def test_it_is_idempotent():
    once = redact(f"password=x {PEM} https://u:p@h sshc_abcdefghijk", ["hunter2"])
    assert redact(once, ["hunter2"]) == once


# Texts that make each pattern try (and mostly fail) a match at every position.
_REPEATED_UNITS = (
    "lorem ipsum password=abc https://u:p@h Bearer abcdefghij sshc_abcdefgh AKIAIOSFODNN7EXAMPLE\n",
    "A",
    "sshpass -f ",
    'password="',
    "://a:",
    "-----BEGIN PRIVATE KEY-----",
    "--password ",
)


def test_it_takes_work_linear_in_the_text():
    # Sixteen times the text: linear is 16x the instructions, quadratic 256x (a backtracking
    # pattern far more). Counted, not timed (tests/instructions.py): measured 12-20x, the
    # highest for "://a:" whose work per byte grows about 7% for each 4x of text.
    script = f"""
import os
from audit.redaction import redact
for unit in {_REPEATED_UNITS!r}:
    small = unit * (8192 // len(unit))
    large = small * 16
    redact(small, ["hunter2"])  # patterns compiled, caches filled: not counted
    {MARKER}
    redact(small, ["hunter2"])
    {MARKER}
    redact(large, ["hunter2"])
    {MARKER}
"""
    counts = segments(script)
    assert len(counts) == 3 * len(_REPEATED_UNITS)
    ratios = {unit: counts[3 * i + 2] / counts[3 * i + 1] for i, unit in enumerate(_REPEATED_UNITS)}
    assert all(ratio < 32 for ratio in ratios.values()), ratios


def test_it_leaves_short_text_uncapped():
    assert cap("abcdef", 6) == ("abcdef", False)


def test_it_caps_keeping_head_and_tail():
    text, cut = cap("0123456789" * 10, 20)
    assert cut
    assert text == "0123456789\n[... 80 characters truncated ...]\n0123456789"


def test_it_caps_to_nothing_but_the_marker_at_zero():
    assert cap("abc", 0) == ("\n[... 3 characters truncated ...]\n", True)


@pytest.mark.parametrize(
    "token",
    [
        "ghp_" + "a1B2" * 9,
        "github_pat_" + "A" * 22 + "_" + "b" * 59,
        "glpat-" + "x" * 20,
        "xoxb-123456789012-abcdefgh1234",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_it_redacts_service_tokens_in_what_the_audit_row_keeps(token: str) -> None:
    """The audit row hides what the model's copy hides (audit/output_hygiene.py uses the same patterns)."""
    assert (
        redact(f"export TOKEN_X={token}\nnext {token} line")
        == f"export TOKEN_X={REDACTED}\nnext {REDACTED} line"
    )
