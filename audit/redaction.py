"""Redaction of secrets from text before it is stored or shown.

Two layers: the exact secrets the caller knows (a host's password, a key passphrase),
and patterns for secrets nobody told us about (private key blocks, ``password=...``,
bearer tokens, credentials in URLs). The patterns err on the side of hiding too much:
a redacted harmless value costs a reader a moment, a stored password costs a rotation.

Every pattern is compiled once and anchored on a literal (``BEGIN``, ``://``, a key
word) with bounded repetitions around it, so the cost stays linear in the text's length;
output up to the SSH layer's cap (1 MiB) goes through here on every call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache, lru_cache

from audit.cues import Cues

REDACTED = "[REDACTED]"

# Shorter "secrets" would redact ordinary words and numbers all over the output.
MIN_SECRET_LENGTH = 4

# A value: quoted (kept up to its closing quote) or bare (up to whitespace, a quote or a
# URL query separator). Commas and semicolons are kept in a bare value on purpose:
# cutting there would leave the rest of a password that contains one in plain sight.
# A quote left open (or closed too far away to look for) falls back to the bare form.
_VALUE = r"""(?:"[^"\n]{0,256}"|'[^'\n]{0,256}'|["']?[^\s"'&]+)"""

# SSHPASS is the environment variable ``sshpass -e`` reads.
_KEY_WORDS = r"(?:password|passwd|pwd|secret|token|api[_-]?key|sshpass)"

_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
    r".*?"
    # An unterminated block (output cut by a size cap) is hidden to the end of the text.
    r"(-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)

# Authorization header first, so its scheme word is kept and its credential hidden.
_AUTHORIZATION = re.compile(
    r"""(\bauthorization["']?[ \t]*[:=][ \t]*["']?(?:(?:bearer|basic|digest|token)[ \t]+)?)([^\s"']+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bbearer[ \t]+)([A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE)

# --password VALUE (the --password=VALUE form is covered by _KEY_VALUE below). A following
# option is not taken for a value: "--no-password -h db" hides nothing.
_OPTION = re.compile(rf"(--[\w-]{{0,32}}{_KEY_WORDS}[\w-]{{0,32}}[ \t]+)((?!-){_VALUE})", re.IGNORECASE)

# password=..., DB_PASSWORD: ..., "api_key": "...": the key name (with its quotes and the
# separator) is kept, only the value is hidden. The separator may not cross a line, so a
# "Password:" prompt does not swallow the next line.
_KEY_VALUE = re.compile(
    rf"""({_KEY_WORDS}[\w-]{{0,32}}["']?[ \t]*[=:][ \t]*)({_VALUE})""",
    re.IGNORECASE,
)

# sshpass [-f file|-d fd|-P prompt|-e|-v ...] -p VALUE command: only sshpass's own options are
# skipped, so the "-p 2222" of "sshpass -e ssh -p 2222 host" is left alone.
# The option loop is possessive and bounded: an option argument may itself look like an
# option, and backtracking over those readings would be exponential.
_SSHPASS = re.compile(
    rf"(\bsshpass(?:[ \t]+(?:-[fdP][ \t]*\S+|-[a-oq-zA-Z]+)){{0,8}}+[ \t]+-p[ \t]*)({_VALUE})"
)

# scheme://user:password@host; the user name stays, as it says whose account it is.
_URL_CREDENTIALS = re.compile(r"(://[^\s/:@]{0,256}:)([^\s/]{1,256})(@)")

# Our own API tokens and AWS access key ids are recognisable by their prefix.
_API_TOKEN = re.compile(r"\bsshc_[A-Za-z0-9_-]{8,}")
_AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")

# SQL: CREATE USER ... IDENTIFIED BY 'secret'.
_IDENTIFIED_BY = re.compile(rf"(\bidentified[ \t]+by[ \t]+)({_VALUE})", re.IGNORECASE)


def _private_key(match: re.Match[str]) -> str:
    return (
        f"{match.group(1)}\n{REDACTED}\n{match.group(2)}"
        if match.group(2)
        else f"{match.group(1)}\n{REDACTED}"
    )


def _keep_quotes(match: re.Match[str]) -> str:
    """Hide group 2 after group 1, keeping the quotes around a quoted value so the text still parses."""
    value = match.group(2)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return f"{match.group(1)}{value[0]}{REDACTED}{value[0]}"
    return f"{match.group(1)}{REDACTED}"


_SERVICE_TOKENS = re.compile(
    # GitHub: classic personal, OAuth, user-to-server, server-to-server and refresh tokens,
    # and fine-grained personal tokens.
    r"\bgh[pousr]_[A-Za-z0-9]{36}\b"
    r"|\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b"
    # GitLab personal, project and group access tokens.
    r"|\bglpat-[A-Za-z0-9_-]{20,64}(?![A-Za-z0-9_-])"
    # Slack bot, user, app-level and refresh tokens: numeric workspace parts, then a secret.
    r"|\bxox[abposre]-[0-9]{6,}-[0-9A-Za-z-]{8,}"
    # JSON Web Tokens: a JSON header and payload (base64url of '{"') and a signature.
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"
)

# (pattern, replacement, lower-case words one of which any match contains), in order:
# private keys before key=value so a key body is hidden whole; the Authorization header
# before the bare bearer form so its scheme word is kept.
_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str], tuple[str, ...]], ...] = (
    (_PRIVATE_KEY, _private_key, ("private key",)),
    (_AUTHORIZATION, _keep_quotes, ("authorization",)),
    (_BEARER, _keep_quotes, ("bearer",)),
    # Not "--", which every ls -l line holds: the option's name holds one of the key words.
    (_OPTION, _keep_quotes, ("password", "passwd", "pwd", "secret", "token", "api", "sshpass")),
    (_KEY_VALUE, _keep_quotes, ("password", "passwd", "pwd", "secret", "token", "api", "sshpass")),
    (_SSHPASS, _keep_quotes, ("sshpass",)),
    (_IDENTIFIED_BY, _keep_quotes, ("identified",)),
    (_URL_CREDENTIALS, rf"\1{REDACTED}\3", ("://",)),
    (_API_TOKEN, REDACTED, ("sshc_",)),
    (_AWS_ACCESS_KEY, REDACTED, ("akia", "asia")),
    (
        _SERVICE_TOKENS,
        REDACTED,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "eyj"),
    ),
)


# Every cue word above, found in one pass over the lower-cased text (audit/cues.py says why).
_CUES = Cues(cue for _, _, cues in _PATTERNS for cue in cues)
# Lower-case ASCII: no pattern matches a text that holds none of these in any case.
CUE_WORDS: tuple[str, ...] = _CUES.words
# The private key block is the one pattern that spans lines; the others are matched line by line.
assert _PATTERNS[0][0] is _PRIVATE_KEY
_PRIVATE_KEY_CUES = frozenset(_PATTERNS[0][2])
_LINE_PATTERNS = _PATTERNS[1:]


@lru_cache(maxsize=256)
def _secrets_pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    # One alternation, longest first, applied in a single pass: a shorter secret that is part
    # of a longer one cannot leave the longer one's remainder visible, and a secret that is a
    # substring of "[REDACTED]" cannot match inside an earlier replacement.
    return re.compile("|".join(re.escape(s) for s in secrets))


def redactable(secrets: Sequence[str]) -> list[str]:
    """The ``secrets`` that :func:`redact` looks for: shorter ones would hide ordinary words."""
    return [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace known secrets and secret-looking patterns (private keys, password=..., tokens)."""
    if not text:
        return text
    # Only the secrets that occur: a substring test is far cheaper than the alternation's scan.
    known = tuple(sorted({s for s in redactable(secrets) if s in text}, key=len, reverse=True))
    if known:
        text = _secrets_pattern(known).sub(REDACTED, text)
    hits = _CUES.hits(text, any_case=True)
    if not hits.found:  # most output: no pattern can match
        return text
    if not _PRIVATE_KEY_CUES.isdisjoint(hits.found):
        # Key blocks span lines: hidden in the whole text first, then the rest line by line.
        text = _PRIVATE_KEY.sub(_private_key, text)
        hits = _CUES.hits(text, any_case=True)
    return _redact_lines(text, hits.at)


def _redact_lines(text: str, hits: list[tuple[frozenset[str], int]]) -> str:
    """The one-line patterns applied only to the lines of ``text`` holding their cue words (``hits``).

    Each of these patterns matches within one line and sees nothing beyond it (a line's ends
    are non-word characters to ``\b`` as a newline is), and a replacement adds no line break,
    so this is the whole text's substitution without a scan of the lines no pattern can match.
    """
    # (start, end, patterns) of each line holding a hit, in order; each line is looked for once,
    # so a long line full of cue words costs no more than its length.
    lines: list[tuple[int, int, set[int]]] = []
    for words, start in hits:
        if not lines or start >= lines[-1][1]:
            end = text.find("\n", start)
            lines.append((text.rfind("\n", 0, start) + 1, len(text) if end < 0 else end, set()))
        lines[-1][2].update(_patterns_cued_by(words))
    pieces: list[str] = []
    done = 0
    for line_start, line_end, wanted in lines:
        line = text[line_start:line_end]
        for i in sorted(wanted):  # in the patterns' order, as on the whole text
            pattern, replacement, _ = _LINE_PATTERNS[i]
            line = pattern.sub(replacement, line)
        pieces += (text[done:line_start], line)
        done = line_end
    pieces.append(text[done:])
    return "".join(pieces)


@cache
def _patterns_cued_by(words: frozenset[str]) -> frozenset[int]:
    return frozenset(i for i, (_, _, cues) in enumerate(_LINE_PATTERNS) if not words.isdisjoint(cues))


def cap(text: str, limit: int) -> tuple[str, bool]:
    """Keep at most ``limit`` characters, head and tail, marking the cut; True when something was cut.

    Both ends are kept because the start of an output says what ran and its end says how it
    finished; the middle is what a reader can most afford to lose.
    """
    if len(text) <= limit:
        return text, False
    limit = max(limit, 0)
    head = limit // 2
    tail = limit - head
    cut = len(text) - limit
    return f"{text[:head]}\n[... {cut} characters truncated ...]\n{text[len(text) - tail :]}", True
