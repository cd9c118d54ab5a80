"""Command rules: deciding whether a command line may run, is refused, or needs an admin's approval.

Admins attach rules to grants, hosts and tags. A rule is a Python regular expression with an
action: ``allow``, ``deny`` or ``approve`` (an admin must approve the run first). Everything
here is pure: the caller loads the rules that apply and passes them in as :class:`Rule` values.

Matching model
--------------
Rules never see the raw command. They see

* the **normalised text** (:func:`normalise`): NFKC Unicode, control characters removed, line
  endings unified, backslash-newline continuations joined, blanks collapsed, blank lines dropped;
  and
* its **segments** (:func:`segments`): the simple commands of that text, cut at newlines and at
  ``;``, ``&&``, ``||``, ``|`` and ``&``, with the bodies of ``$(...)``, backticks, ``<(...)``
  and ``>(...)`` taken out as segments of their own (a ``$()``-style placeholder stays behind).

:func:`decide` then applies, in order:

1. a ``deny`` rule that ``re.search``-es the whole text or any segment: **deny**. Deny beats allow.
2. if the caller requires an allow-list, or any ``allow`` rule applies: every segment must
   ``re.fullmatch`` some allow rule, else **deny**. So ``ls( .*)?`` allows ``ls -la`` but not
   ``ls; rm -rf /``, ``ls`` + newline + ``rm x``, ``ls $(rm x)`` or ``ls `rm x```.
3. an ``approve`` rule that matches like a deny rule: **approve**.
4. otherwise **allow**.

Splitting never respects quotes, so it can only cut too much, never too little: a cut inside a
quoted string adds a segment that must be allowed too (the safe direction), and ``$(...)`` runs
inside double quotes anyway. Where the shell's reading is ambiguous (a backslash-newline after
what may be a ``#`` comment), the segments of both readings are checked.

What this is not
----------------
Patterns over shell text guard against accidents (an agent running the wrong thing on the wrong
host); they are **not a sandbox**. A shell has too many ways to run a command that no pattern
sees: variables, aliases, ``eval``, ``sh -c``, ``xargs``, ``find -exec``, interpreters
(``python -c``), scripts already on the host. The real boundary is the grant (which hosts a client
may reach at all) and a low-privilege account on the remote side.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

MAX_PATTERN_LENGTH = 2000


class Verdict(StrEnum):
    """What the policy says of a command (a rule's action takes the same three values)."""

    ALLOW = "allow"
    DENY = "deny"
    APPROVE = "approve"


ALLOW, DENY, APPROVE = Verdict.ALLOW, Verdict.DENY, Verdict.APPROVE


class PatternError(ValueError):
    """A rule's pattern cannot be used; the message says why, for an admin form."""


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a rule's pattern (no flags), or raise :class:`PatternError`."""
    if not pattern:
        raise PatternError("The pattern is empty; write a regular expression for the commands it means.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(
            f"The pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}."
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PatternError(f"Not a valid regular expression: {exc}.") from exc
    except (RecursionError, OverflowError) as exc:  # absurdly deep nesting or huge repeat counts
        raise PatternError("The regular expression is too complex to compile.") from exc


def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return compile_pattern(pattern)
    except PatternError:
        return None


# --- Normalisation ----------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")  # C0 controls except \t and \n
_BLANKS = re.compile(r"[ \t]+")
# The shell starts a comment at a `#` that begins a word; words end at blanks and metacharacters.
_COMMENT_START = re.compile(r"(?:^|[ \t;&|()<>])#")


def _odd_backslashes_at_end(text: str) -> bool:
    # Counted rather than matched with a regex, which would be quadratic on long backslash runs.
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _join_continuations(text: str, *, in_comments: bool) -> str:
    """Join backslash-newline continuations, as the shell does before it reads any words.

    This runs on the raw text, before anything is removed or mapped: a backslash that escapes
    something else (``\\`` + CR, ``\\`` + NUL, a fullwidth backslash that NFKC turns into ``\\``)
    does not continue the line on the remote shell, so it must not here either, or a newline the
    shell obeys would vanish from the text the rules see.

    A backslash at the end of a comment does not continue the line either. Whether a ``#`` starts
    a comment depends on quoting, which is not parsed here, so ``in_comments`` picks the reading:
    True joins regardless (the ``#`` was quoted), False keeps the line break (it was a comment).
    """
    *lines, last = text.split("\n")
    done: list[str] = []
    current: list[str] = []  # physical lines joined into the logical line being read
    tail = ""  # last character of the logical line so far: it decides whether a `#` starts a word
    commented = False
    for line in lines:
        commented = commented or _COMMENT_START.search(tail + line) is not None
        if _odd_backslashes_at_end(line) and (in_comments or not commented):
            current.append(line[:-1])
            tail = line[-2:-1] or tail
            continue
        current.append(line)
        done.append("".join(current))
        current, tail, commented = [], "", False
    current.append(last)
    done.append("".join(current))
    return "\n".join(done)


def _normalise(command: str, *, in_comments: bool) -> str:
    text = _join_continuations(command, in_comments=in_comments)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # A remote shell never sees what follows a NUL; other controls are invisible in a pattern's
    # eyes. Dropping them means "r\0m" reads as "rm": stricter for deny rules, never looser.
    text = _CONTROL.sub("", text)
    # After the removals, so that nothing removed later can bring a base character and a
    # combining mark together and make a second pass compose them differently.
    text = unicodedata.normalize("NFKC", text)
    lines = [line for line in (_BLANKS.sub(" ", raw).strip(" ") for raw in text.split("\n")) if line]
    # A line can still end in an odd backslash here (it escaped a control character, a CR or a
    # blank that is gone now, or NFKC made it). It never continued the line, so double it: the
    # next pass must not join what this one kept apart (normalise is idempotent).
    for i in range(len(lines) - 1):
        if _odd_backslashes_at_end(lines[i]):
            lines[i] += "\\"
    return "\n".join(lines)


def normalise(command: str) -> str:
    """The text rules are matched against (see the module docstring)."""
    return _normalise(command, in_comments=True)


# --- Segments ---------------------------------------------------------------------------------

# `&&` and `||` come before `&` and `|` so that they are read as one operator.
_TOKEN = re.compile(r"\$\(|[<>]\(|&&|\|\||[`()\n;&|]")
_OPENERS = {"$(": "$()", "<(": "<()", ">(": ">()"}  # opener -> placeholder left in the outer text


@dataclass
class _Frame:
    """The text being read at one level: top level, or the body of a substitution."""

    closer: str  # ")" or "`"; "" at top level
    placeholder: str
    parts: list[str] = field(default_factory=list)
    depth: int = 0  # plain "(" opened at this level (subshells, $((...)) arithmetic)


def _split(text: str) -> list[str]:
    found: list[str] = []
    stack = [_Frame("", "")]

    def cut(frame: _Frame) -> None:
        found.append("".join(frame.parts).strip())
        frame.parts.clear()

    def close() -> None:
        body = stack.pop()
        cut(body)
        stack[-1].parts.append(body.placeholder)

    pos = 0
    for match in _TOKEN.finditer(text):
        frame, op, start = stack[-1], match.group(), match.start()
        frame.parts.append(text[pos:start])
        pos = match.end()
        before = text[start - 1 : start]
        if op in _OPENERS:
            stack.append(_Frame(")", _OPENERS[op]))
        elif op == "`":
            # Without a parser, a backtick closes an open backtick body and otherwise opens one.
            if frame.closer == "`":
                close()
            else:
                stack.append(_Frame("`", "$()"))
        elif op == "(":
            frame.depth += 1
            frame.parts.append(op)
        elif op == ")" and frame.depth:
            frame.depth -= 1
            frame.parts.append(op)
        elif op == ")" and frame.closer == ")":
            close()
        elif op == ")" or (op == "&" and before in ("<", ">")) or (op == "|" and before == ">"):
            # A stray ")" is kept as text; `2>&1`, `<&3` and `>|` are redirections, not operators.
            # (`&>file` is cut at `&`: POSIX sh reads it as `&` then `>file`, and cutting is safe.)
            frame.parts.append(op)
        else:  # newline ; && || | &
            cut(frame)
    stack[-1].parts.append(text[pos:])
    while len(stack) > 1:  # unclosed substitutions run to the end of the text
        close()
    cut(stack[0])
    return [segment for segment in found if segment]


@dataclass(frozen=True)
class _Parsed:
    text: str
    segments: tuple[str, ...]


# A batch checks one command against the rules of each of its hosts: parsed once, not per host.
@lru_cache(maxsize=32)
def _parse(command: str) -> _Parsed:
    text = normalise(command)
    found = _split(text)
    # The other reading of a backslash-newline after a possible comment (see _join_continuations).
    comment_reading = _normalise(command, in_comments=False)
    if comment_reading != text:
        found += _split(comment_reading)
    return _Parsed(text, tuple(dict.fromkeys(found)))


def segments(command: str) -> tuple[str, ...]:
    """The simple commands of the normalised text, each stripped, none empty (see module docstring)."""
    return _parse(command).segments


# --- Rules and decisions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    action: str  # "allow" | "deny" | "approve"
    pattern: str
    source: str  # where it came from, for messages: "grant 3", "host web1", "tag prod"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str  # one line a model can act on
    rule: Rule | None = None


def _first_match(rules: Iterable[Rule], parsed: _Parsed) -> Rule | None:
    for rule in rules:
        pattern = _compiled(rule.pattern)
        # A stored pattern that no longer compiles matches everything here (used for deny and
        # approve): ignoring it would silently lift a restriction the admin meant to impose.
        if pattern is None:
            return rule
        if pattern.search(parsed.text) or any(pattern.search(s) for s in parsed.segments):
            return rule
    return None


def first_match(rules: Iterable[Rule], command: str) -> Rule | None:
    """The first rule that searches the normalised text or any segment (for deny and approve rules)."""
    return _first_match(rules, _parse(command))


def _first_unlisted(allow_rules: Sequence[Rule], parsed: _Parsed) -> str | None:
    # A broken allow pattern matches nothing: treating it as "match everything" would open
    # every command to whoever holds the grant.
    patterns = [p for p in (_compiled(rule.pattern) for rule in allow_rules) if p is not None]
    for segment in parsed.segments:
        if not any(p.fullmatch(segment) for p in patterns):
            return segment
    return None


def allow_listed(allow_rules: Sequence[Rule], command: str) -> bool:
    """True only when every segment fully matches some allow pattern (False with no rules or segments)."""
    parsed = _parse(command)
    return bool(allow_rules) and bool(parsed.segments) and _first_unlisted(allow_rules, parsed) is None


def _one_line(text: str, limit: int = 120) -> str:
    if len(text) > limit:
        text = text[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cite(rule: Rule) -> str:
    broken = " (not a valid pattern: an admin must fix it)" if _compiled(rule.pattern) is None else ""
    return f"rule /{_one_line(rule.pattern)}/ ({_one_line(rule.source)}){broken}"


def decide(command: str, rules: Sequence[Rule], allow_list_required: bool) -> Decision:
    """Apply the rules to a command: deny, then the allow-list, then approve (see module docstring)."""
    parsed = _parse(command)
    if not parsed.text:
        return Decision(DENY, "empty command")
    # Anything that is not allow or approve counts as deny, so a mistyped action fails closed.
    denying = [rule for rule in rules if rule.action not in (ALLOW, APPROVE)]
    allowing = [rule for rule in rules if rule.action == ALLOW]
    approving = [rule for rule in rules if rule.action == APPROVE]

    rule = _first_match(denying, parsed)
    if rule is not None:
        return Decision(DENY, f"command denied by {_cite(rule)}", rule)
    if allow_list_required or allowing:
        if not allowing:
            return Decision(DENY, "command is not on the allow-list: no allow rules apply here")
        unlisted = _first_unlisted(allowing, parsed)
        if unlisted is not None:
            return Decision(
                DENY,
                f'command is not on the allow-list: "{_one_line(unlisted)}" matches no allow rule'
                " (every command in a line, pipeline or $(...) must be allowed)",
            )
    rule = _first_match(approving, parsed)
    if rule is not None:
        return Decision(APPROVE, f"command requires an admin's approval by {_cite(rule)}", rule)
    return Decision(ALLOW, "command allowed by the allow-list" if allowing else "command allowed")
