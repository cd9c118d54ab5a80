"""What a read-only grant may run: commands that cannot change the host's files.

A read-only grant's allow rules say which commands the admin means; this module says whether
a command line can write, whatever those rules say. It reads the command the way the remote
shell will (quotes, escapes, line continuations, redirections, here-documents) with a small
lexer of its own, and refuses, naming the construct:

* a redirection that opens a file for writing (``>``, ``>>``, ``>|``, ``&>``, ``&>>``, ``<>``,
  with or without a descriptor number, and ``>&word`` when ``word`` is not a descriptor),
  unless its target is literally ``/dev/null``, and any redirection to bash's network names
  ``/dev/tcp/...`` and ``/dev/udp/...``;
* anything it cannot classify: command, arithmetic and process substitution, backticks,
  ``${...}`` with operators, variable assignments, subshells and groups, function
  definitions, shell keywords, here-documents whose body is expanded, unbalanced quotes, a
  command name that is not a plain word (``$X``, a glob, a path outside the system
  directories);
* commands known to write or to run other commands (``tee``, ``dd``, ``cp``, ``sed``,
  ``awk``, ``sh``, ``python``, ``xargs``, ``env CMD``, ``nice``, ``timeout``, ``eval``, ...),
  whatever the allow rules say;
* the writing options of readers that have them (``find -delete``/``-exec``/``-fprint``,
  ``sort -o``, a second operand of ``uniq``, ``less -o``, ``tree -o``, ``date -s``, ...);
* any other command, unless one of the grant's own allow rules **begins with its name**
  (``systemctl status [\\w@.-]+``): the admin's explicit word that it only reads.

It is deliberately stricter than the shell: a harmless line it cannot read is refused, never
the other way round. Both shells that run commands are covered: the login shell (bash, via
``eval``) and ``sh`` (dash, under sudo).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DEV_NULL = "/dev/null"

# Where a command named by its path may live (``/usr/bin/cat`` is ``cat``; ``./cat`` is not).
SYSTEM_DIRS = frozenset({"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KEYWORDS = _words(
    "if then else elif fi for while until do done case esac function select coproc time [[ ]] ! { }"
)

# Commands that write files, run other commands or change the shell itself: never on a
# read-only grant, whatever the allow rules say.
WRITERS_AND_RUNNERS = _words(
    # shells and interpreters (they run whatever program they are given)
    "sh bash dash zsh ksh mksh fish csh tcsh busybox python python2 python3 perl ruby node nodejs "
    "php lua tclsh awk gawk mawk nawk sed "
    # commands that run another command
    "xargs command builtin exec eval source . nice nohup timeout stdbuf setsid ionice chroot sudo "
    "su doas runuser watch time strace ltrace script expect parallel flock unshare nsenter systemd-run "
    # commands that write files
    "tee dd cp mv rm touch mkdir rmdir ln chmod chown chgrp install truncate shred split csplit "
    "tar gzip gunzip bzip2 bunzip2 xz unxz zip unzip patch rsync scp sftp ssh curl wget git mkfifo "
    "mknod mktemp sqlite3 crontab at batch vi vim nvim view nano ed ex emacs pico "
    # builtins that change the shell (functions, variables, aliases, history, traps)
    "alias unalias declare typeset export local readonly let unset set shopt read mapfile "
    "readarray hash enable ulimit umask history fc trap"
)

# Readers with no option that writes a file or runs a command.
PLAIN_READERS = _words(
    "cat echo ls head tail wc grep egrep fgrep cut tr nl tac rev column fold expand unexpand "
    "paste join comm uptime id whoami groups uname df du free ps pwd stat basename dirname "
    "realpath readlink md5sum sha1sum sha224sum sha256sum sha384sum sha512sum b2sum cksum cmp diff "
    "true false cd printenv which type nproc arch w who lsblk seq sleep od hexdump strings"
)


class ReadOnlyViolation(ValueError):
    """The command could change the host's files, or cannot be classified; the message says which part."""


@dataclass
class Word:
    """A shell word: its text with quotes removed, and whether that is what the shell will use."""

    raw: str = ""
    text: str = ""
    static: bool = True  # no expansion, glob, tilde, brace or $'...' anywhere in it
    quoted: bool = False  # quotes or a backslash escape in it (a line continuation is neither)


@dataclass
class SimpleCommand:
    """One simple command: its words (name first) and its redirections as (operator, target)."""

    words: list[Word] = field(default_factory=list)
    redirections: list[tuple[str, Word]] = field(default_factory=list)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!\-]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_FD_DUP = re.compile(r"[0-9]+-?|-")
_DIGITS = re.compile(r"[0-9]+")
# Characters that are neither metacharacters nor quoting, expansion, glob or tilde.
_PLAIN_RUN = re.compile(r"[^ \t\n;&|()<>\\'\"$`*?\[{}~]+")
_NAMED_DESCRIPTOR = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}[<>]")
_METACHARACTERS = frozenset(" \t\n;&|()<>")
_REDIRECTIONS = ("<<<", "<<-", "<<", "<>", "<&", "<(", "<", ">>", ">|", ">&", ">(", ">")


def _one_line(text: str, limit: int = 60) -> str:
    text = text if len(text) <= limit else text[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Lexer:
    """Reads a command line into simple commands, raising ReadOnlyViolation on what it cannot classify."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.commands: list[SimpleCommand] = []
        self.current = SimpleCommand()
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, body expanded)

    # -- characters --------------------------------------------------------------------------

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def startswith(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    # -- top level ---------------------------------------------------------------------------

    def run(self) -> list[SimpleCommand]:
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t":
                self.pos += 1
            elif self.startswith("\\\n"):
                self.pos += 2
            elif char == "\n":
                self.pos += 1
                self.finish()
                self.read_heredocs()
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif self.startswith("&>"):
                self.pos += 1
                self.redirection("&")
            elif char in ";&|":
                self.separator()
            elif char in "()":
                raise ReadOnlyViolation(f"'{char}' (subshells and function definitions are not classified)")
            elif char in "<>":
                self.redirection("")
            else:
                self.word_or_numbered_redirection()
        self.finish()
        if self.heredocs:
            self.read_heredocs()
        return self.commands

    def finish(self) -> None:
        if self.current.words or self.current.redirections:
            self.commands.append(self.current)
        self.current = SimpleCommand()

    def separator(self) -> None:
        for op in (";;", "&&", "||", "|&", ";", "&", "|"):
            if self.startswith(op):
                if op == ";;":
                    raise ReadOnlyViolation("';;' (case statements are not classified)")
                self.pos += len(op)
                self.finish()
                return

    def word_or_numbered_redirection(self) -> None:
        digits = _DIGITS.match(self.text, self.pos)
        if digits and self.text[digits.end() : digits.end() + 1] in ("<", ">"):
            self.pos = digits.end()
            self.redirection(digits.group())
            return
        named = _NAMED_DESCRIPTOR.match(self.text, self.pos)
        if named:
            raise ReadOnlyViolation(f"redirection to a named descriptor '{named.group()}'")
        word = self.word()
        if not self.current.words and _ASSIGNMENT.match(word.raw):
            raise ReadOnlyViolation(f"variable assignment '{_one_line(word.raw)}'")
        self.current.words.append(word)

    # -- redirections ------------------------------------------------------------------------

    def redirection(self, fd: str) -> None:
        op = next(op for op in _REDIRECTIONS if self.startswith(op))
        if op in ("<(", ">("):
            raise ReadOnlyViolation(f"process substitution '{op}...)'")
        self.pos += len(op)
        op = fd + op
        while self.peek() in (" ", "\t") or self.startswith("\\\n"):
            self.pos += 2 if self.peek() == "\\" else 1
        if not self.peek() or self.peek() in _METACHARACTERS:
            raise ReadOnlyViolation(f"redirection '{op}' without a target")
        target = self.word()
        self.current.redirections.append((op, target))
        base = op.lstrip("0123456789&")
        if base in ("<<", "<<-"):
            if not re.fullmatch(r"[A-Za-z0-9_]+", target.text):
                raise ReadOnlyViolation(
                    f"here-document delimiter '{_one_line(target.raw)}' (use letters, digits, _)"
                )
            self.heredocs.append((target.text, op.endswith("-"), not (target.quoted or not target.static)))
            return
        if base != "<<<" and ("/dev/tcp/" in target.text or "/dev/udp/" in target.text):
            # bash connects for these names; ">&0" then writes to the socket (to a local Redis...).
            raise ReadOnlyViolation(
                f"redirection '{op}' to '{_one_line(target.raw)}' (bash opens a network connection)"
            )
        if base in ("<", "<<<"):
            return  # reading a file, or a string as input
        if (
            base in (">&", "<&")
            and not op.startswith("&")
            and target.static
            and _FD_DUP.fullmatch(target.text)
        ):
            return  # duplicating or closing a descriptor opens no file
        if base == "<&":
            raise ReadOnlyViolation(f"redirection '{op}{_one_line(target.raw)}'")
        if not (target.static and target.text == DEV_NULL):
            raise ReadOnlyViolation(
                f"output redirection '{op}' to '{_one_line(target.raw)}' (only {DEV_NULL} is allowed)"
            )

    def read_heredocs(self) -> None:
        for delimiter, strip_tabs, expanded in self.heredocs:
            body: list[str] = []
            while self.pos < len(self.text):
                end = self.text.find("\n", self.pos)
                end = len(self.text) if end < 0 else end
                line = self.text[self.pos : end]
                self.pos = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
                body.append(line)
            text = "\n".join(body)
            if expanded and any(c in text for c in "$`\\"):
                raise ReadOnlyViolation(
                    "here-document with expansions in its body (quote the delimiter: <<'EOF')"
                )
        self.heredocs = []

    # -- words -------------------------------------------------------------------------------

    def word(self) -> Word:
        word = Word()
        start = self.pos
        text: list[str] = []
        while self.pos < len(self.text) and self.peek() not in _METACHARACTERS:
            plain = _PLAIN_RUN.match(self.text, self.pos)
            if plain:  # the common case, a run of ordinary characters, in one step
                text.append(plain.group())
                self.pos = plain.end()
                continue
            char = self.peek()
            if char == "\\":
                if self.peek(1) == "\n":
                    self.pos += 2
                    continue
                text.append(self.peek(1))
                word.quoted = True
                self.pos += 2
            elif char == "'":
                end = self.text.find("'", self.pos + 1)
                if end < 0:
                    raise ReadOnlyViolation("unbalanced single quote")
                text.append(self.text[self.pos + 1 : end])
                word.quoted = True
                self.pos = end + 1
            elif char == '"':
                word.quoted = True
                self.pos += 1
                self.double_quoted(word, text)
            elif char == "$":
                self.dollar(word, text, quoted=False)
            elif char == "`":
                raise ReadOnlyViolation("command substitution with backticks")
            else:
                if char in "*?[{}" or (char == "~" and self.pos == start):
                    word.static = False
                text.append(char)
                self.pos += 1
        word.raw = self.text[start : self.pos]
        word.text = "".join(text)
        return word

    def double_quoted(self, word: Word, text: list[str]) -> None:
        while True:
            char = self.peek()
            if not char:
                raise ReadOnlyViolation("unbalanced double quote")
            if char == '"':
                self.pos += 1
                return
            if char == "\\" and self.peek(1) in ("$", "`", '"', "\\", "\n"):
                if self.peek(1) != "\n":
                    text.append(self.peek(1))
                self.pos += 2
            elif char == "$":
                self.dollar(word, text, quoted=True)
            elif char == "`":
                raise ReadOnlyViolation("command substitution with backticks")
            else:
                text.append(char)
                self.pos += 1

    def dollar(self, word: Word, text: list[str], quoted: bool) -> None:
        # Indices into the whole text, never slices of its rest: a line with many "$" stays linear.
        at = self.pos + 1
        if self.text.startswith("((", at):
            raise ReadOnlyViolation("arithmetic expansion '$((...))'")
        if self.text.startswith("(", at):
            raise ReadOnlyViolation("command substitution '$(...)'")
        if self.text.startswith("[", at):
            raise ReadOnlyViolation("arithmetic expansion '$[...]'")
        if self.text.startswith("{", at):
            end = self.text.find("}", at)
            if end < 0 or not _PARAMETER.fullmatch(self.text, at + 1, end):
                shown = self.text[at : end + 1] if end >= 0 else self.text[at:]
                raise ReadOnlyViolation(
                    f"parameter expansion '${_one_line(shown)}' (only ${{NAME}} is classified)"
                )
            word.static = False
            text.append(self.text[self.pos : end + 1])
            self.pos = end + 1
            return
        if not quoted and self.peek(1) in ("'", '"'):
            # $'...' (ANSI-C) and $"..." (translated): bash and dash read them differently.
            word.static = False
            if self.peek(1) == '"':
                self.pos += 2
                self.double_quoted(word, text)
                return
            index = at + 1
            while index < len(self.text) and self.text[index] != "'":
                index += 2 if self.text[index] == "\\" else 1
            if index >= len(self.text):
                raise ReadOnlyViolation("unbalanced single quote")
            if "\\" in self.text[at + 1 : index]:
                # dash has no $'...': for it "$'\\' > f #'" is "$" + '\\' and a redirection.
                raise ReadOnlyViolation("$'...' with a backslash (bash and dash end it differently)")
            text.append(self.text[at + 1 : index])
            self.pos = index + 1
            return
        parameter = _PARAMETER.match(self.text, at)
        if parameter is None:
            text.append("$")  # a lone dollar is a literal one
            self.pos += 1
            return
        # $1 is one digit: $10 is ${1}0.
        name = parameter.group() if not parameter.group()[0].isdigit() else parameter.group()[0]
        word.static = False
        text.append("$" + name)
        self.pos += 1 + len(name)


def commands(command: str) -> list[SimpleCommand]:
    """The simple commands of ``command`` as the shell reads them; ReadOnlyViolation if it cannot tell."""
    return _Lexer(command).run()


# --- the commands themselves ------------------------------------------------------------------


def _long(arg: str, *names: str) -> bool:
    """Whether ``arg`` is one of the long options ``names`` or an abbreviation of it (GNU getopt)."""
    given = arg.split("=", 1)[0]
    return given.startswith("--") and len(given) > 2 and any(name.startswith(given) for name in names)


def _short(arg: str, letters: str) -> bool:
    """Whether a cluster of short options (``-ro``) contains any of ``letters``."""
    return arg.startswith("-") and not arg.startswith("--") and any(c in arg[1:] for c in letters)


def _options(args: Sequence[str]) -> list[str]:
    """Every argument, ``--`` and what follows it included.

    ``--`` cannot be trusted to end the options: it may be the argument of the option before
    it (``sort -T -- -o f`` writes ``f``, ``file -F -- -C`` compiles). Checking the operands too
    only refuses a file named like a writing option.
    """
    return list(args)


def _find(args: Sequence[str]) -> str:
    writing = {"-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0", "-fprintf", "-fls"}
    found = [a for a in args if a in writing]
    return f"find {found[0]} (it writes files or runs commands)" if found else ""


def _sort(args: Sequence[str]) -> str:
    for arg in _options(args):
        if _short(arg, "o") or _long(arg, "--output", "--compress-program"):
            return f"sort {arg} (it writes a file or runs a program)"
    return ""


def _uniq(args: Sequence[str]) -> str:
    # After "--" every argument is an operand (uniq -- in -out writes "-out").
    end = args.index("--") if "--" in args else len(args)
    operands = [a for a in args[:end] if not a.startswith("-") or a == "-"] + list(args[end + 1 :])
    return "uniq with a second operand (it is the output file)" if len(operands) > 1 else ""


# Long options of less and more that neither write nor read commands or settings from a file.
# Every other long one is refused: less matches abbreviations and some names in either case,
# and --lesskey-src=FILE may set LESSOPEN, a command less runs on each file it opens.
PAGER_LONG_OPTIONS = _words(
    "--chop-long-lines --line-numbers --LINE-NUMBERS --raw-control-chars --RAW-CONTROL-CHARS "
    "--quit-if-one-screen --QUIT-AT-EOF --quit-at-eof --no-init --ignore-case --IGNORE-CASE "
    "--squeeze-blank-lines --silent --quiet --QUIET --squeeze --plain --no-pause --logical"
)


def _pager(name: str) -> Callable[[Sequence[str]], str]:
    def check(args: Sequence[str]) -> str:
        for arg in _options(args):
            # -o/-O log file; -k a lesskey file (its #env section can set LESSOPEN).
            if arg.startswith("+") or _short(arg, "oOk"):
                return f"{name} {arg} (a log file, a lesskey file or start-up commands)"
            if arg.startswith("--") and arg != "--" and arg not in PAGER_LONG_OPTIONS:
                return f"{name} {arg} (only a few long options are known not to write or run commands)"
        return ""

    return check


def _tree(args: Sequence[str]) -> str:
    # -o names an output file; -R (with -H) writes an 00Tree.html into every directory.
    found = [a for a in args if _short(a, "oR") or _long(a, "--output")]
    return f"tree {found[0]} (it writes files)" if found else ""


def _date(args: Sequence[str]) -> str:
    for arg in _options(args):
        if _short(arg, "s") or _long(arg, "--set"):
            return f"date {arg} (it sets the clock)"
    return ""


def _printf(args: Sequence[str]) -> str:
    return "printf -v (it assigns a variable)" if args and args[0].startswith("-v") else ""


def _env(args: Sequence[str]) -> str:
    return "env with arguments (it runs the command it is given)" if args else ""


def _file(args: Sequence[str]) -> str:
    for arg in _options(args):
        if _short(arg, "C") or _long(arg, "--compile"):
            return f"file {arg} (it writes a compiled magic file)"
    return ""


def _hostname(args: Sequence[str]) -> str:
    safe = {"-s", "-f", "-i", "-I", "-d", "-a", "-A", "--short", "--fqdn", "--long", "--domain"}
    found = [a for a in args if a not in safe]
    return f"hostname {found[0]} (it can set the host name)" if found else ""


# Readers with options (or operands) that write: those are refused, the rest may run.
CHECKED_READERS: dict[str, Callable[[Sequence[str]], str]] = {
    "find": _find,
    "sort": _sort,
    "uniq": _uniq,
    "less": _pager("less"),
    "more": _pager("more"),
    "tree": _tree,
    "date": _date,
    "printf": _printf,
    "env": _env,
    "file": _file,
    "hostname": _hostname,
}


def _journalctl(args: Sequence[str]) -> str:
    # journalctl reads, but these delete archived journals, rotate, flush or sync them, write keys
    # or the catalog, or (--cursor-file) write the cursor to a file.
    writing = (
        "--vacuum-size", "--vacuum-files", "--vacuum-time", "--rotate", "--flush", "--sync",
        "--relinquish-var", "--smart-relinquish-var", "--setup-keys", "--update-catalog", "--cursor-file",
    )  # fmt: skip
    found = [a for a in args if _long(a, *writing)]
    return f"journalctl {found[0]} (it deletes, rotates or writes journal files)" if found else ""


# Commands an admin may allow by naming them (see explicitly_allowed) whose writing options are
# refused even then: a rule like ^journalctl( .*)? means "journalctl, to read the journal".
NAMED_READERS: dict[str, Callable[[Sequence[str]], str]] = {"journalctl": _journalctl}


def explicitly_allowed(name: str, allow_patterns: Sequence[str]) -> bool:
    """Whether an allow pattern begins with ``name`` as a whole word (``systemctl status .*``)."""
    for pattern in allow_patterns:
        text = pattern.removeprefix("^")
        if text.startswith(name) and not re.match(r"[\w.-]", text[len(name) : len(name) + 1]):
            return True
    return False


def _command_name(word: Word) -> str:
    if not word.static or word.quoted:
        raise ReadOnlyViolation(f"command name '{_one_line(word.raw)}' that is not a plain word")
    name = word.text
    if "/" in name:
        directory, _, base = name.rpartition("/")
        if directory not in SYSTEM_DIRS or not base:
            raise ReadOnlyViolation(
                f"command '{_one_line(name)}' given by a path outside the system directories"
            )
        name = base
    return name


def _check(command: SimpleCommand, allow_patterns: Sequence[str]) -> None:
    if not command.words:
        return  # only redirections, already checked
    first = command.words[0]
    # A line continuation is no quoting: "ti\\\ntime" is the keyword time to the shell.
    if first.raw in KEYWORDS or (first.static and not first.quoted and first.text in KEYWORDS):
        raise ReadOnlyViolation(
            f"shell keyword '{_one_line(first.text)}' (control structures are not classified)"
        )
    name = _command_name(first)
    args = command.words[1:]
    if name in WRITERS_AND_RUNNERS:
        raise ReadOnlyViolation(f"'{name}' (it writes files, runs other commands or changes the shell)")
    if name in PLAIN_READERS:
        return
    check = CHECKED_READERS.get(name)
    if check is not None:
        # A glob or a variable could expand to a writing option (a file named "-delete").
        dynamic = next((a for a in args if not a.static), None)
        if dynamic is not None:
            raise ReadOnlyViolation(f"{name} with an expanded argument '{_one_line(dynamic.raw)}'")
        problem = check([a.text for a in args])
        if problem:
            raise ReadOnlyViolation(problem)
        return
    if not explicitly_allowed(name, allow_patterns):
        raise ReadOnlyViolation(
            f"'{_one_line(name)}' is not known to only read; an admin can allow it on this grant"
            " with an allow rule that begins with its name"
        )
    named = NAMED_READERS.get(name)
    problem = named([a.text for a in args]) if named is not None else ""
    if problem:
        raise ReadOnlyViolation(problem)


def refusal(command: str, allow_patterns: Sequence[str] = ()) -> str:
    """Why ``command`` may not run on a read-only grant ("" when it may).

    ``allow_patterns`` are the grant's own allow rules, for commands an admin named explicitly.
    """
    try:
        for simple in commands(command):
            _check(simple, allow_patterns)
    except ReadOnlyViolation as exc:
        return f"a read-only grant refuses {exc}"
    return ""
