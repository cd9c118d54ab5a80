"""Hosts from an OpenSSH client config (``~/.ssh/config``).

Every ``Host`` alias without wildcards or negation becomes a candidate. Its options are
resolved the way ssh resolves them (ssh_config(5)): every block whose patterns match the
alias is read in file order and, for each option, the first value obtained wins, so
``Host *`` blocks act as defaults (or as overrides when they come first). ``Include``
is followed recursively with globs; relative paths are taken from the top-level file's
directory, as ssh takes them from ``~/.ssh`` for the user's config. ``Match`` blocks
are not evaluated: their options are ignored and reported.
"""

from __future__ import annotations

import fnmatch
import glob
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from hosts.importers import (
    MAX_SOURCE_BYTES,
    Candidate,
    InventoryError,
    ParsedSource,
    decode_source,
    parse_port,
)

# OpenSSH refuses deeper nesting too (READCONF_MAX_DEPTH).
MAX_INCLUDE_DEPTH = 16

_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*)$")
_WILDCARD = re.compile(r"[*?!]")
# The options an import records; the others are not sshcontrol's business.
_WANTED = {"hostname", "port", "user", "identityfile", "proxyjump"}


@dataclass
class _Block:
    patterns: list[str]
    source: str
    is_match: bool = False
    options: list[tuple[str, str, str]] = field(default_factory=list)  # (keyword, value, where)

    def matches(self, alias: str) -> bool:
        if self.is_match:
            return False
        name = alias.lower()
        positive = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(name, pattern.lstrip("!").lower()):
                if negated:
                    return False
                positive = True
        return positive


@dataclass
class _Reader:
    base_dir: Path | None  # None: Include lines are reported, not followed (uploads)
    blocks: list[_Block] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> where it was declared
    notes: list[str] = field(default_factory=list)

    def read_text(self, text: str, name: str, depth: int = 0) -> None:
        if not self.blocks:
            self.blocks.append(_Block(["*"], f"{name}:0"))
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{name}:{number}"
            match = _LINE.match(line)
            if match is None:
                self.notes.append(f"{where}: not a 'Keyword value' line, ignored")
                continue
            keyword = match.group(1).lower()
            try:
                args = shlex.split(match.group(2), comments=True)
            except ValueError:
                self.notes.append(f"{where}: unbalanced quotes, line ignored")
                continue
            if not args:
                self.notes.append(f"{where}: {match.group(1)} has no value, ignored")
                continue
            if keyword == "host":
                self.blocks.append(_Block(args, where))
                for pattern in args:
                    if not _WILDCARD.search(pattern):
                        self.aliases.setdefault(pattern, where)
            elif keyword == "match":
                self.blocks.append(_Block(args, where, is_match=True))
                self.notes.append(f"{where}: Match blocks are not evaluated; their options were ignored")
            elif keyword == "include":
                self._include(args, where, depth)
            elif keyword in _WANTED:
                self.blocks[-1].options.append((keyword, args[0], where))
            elif keyword == "proxycommand":
                self.notes.append(f"{where}: ProxyCommand is not imported (only ProxyJump is recorded)")

    def _include(self, patterns: list[str], where: str, depth: int) -> None:
        if self.base_dir is None:
            self.notes.append(f"{where}: Include is not followed for an uploaded file")
            return
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise InventoryError(f"{where}: Include nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)")
        enclosing = self.blocks[-1]
        for pattern in patterns:
            expanded = Path(pattern).expanduser()
            if not expanded.is_absolute():
                expanded = self.base_dir / expanded
            # Like ssh: matches in lexical order, and a pattern matching nothing is no error.
            for found in sorted(glob.glob(str(expanded))):
                path = Path(found)
                if path.is_dir():
                    continue
                self.read_text(read_config_file(path), self._display_name(path), depth + 1)
        # After an included file the enclosing block goes on (ssh restores its state), but
        # its later options come after the included blocks in "first value wins" order.
        self.blocks.append(_Block(list(enclosing.patterns), where, enclosing.is_match))

    def _display_name(self, path: Path) -> str:
        """An included file's name for the report: relative to the top-level file's directory."""
        assert self.base_dir is not None
        try:
            return str(path.resolve().relative_to(self.base_dir))
        except ValueError:
            return str(path)

    def candidates(self) -> list[Candidate]:
        found: list[Candidate] = []
        for alias, where in self.aliases.items():
            values: dict[str, tuple[str, str]] = {}
            for block in self.blocks:
                if block.matches(alias):
                    for keyword, value, opt_where in block.options:
                        values.setdefault(keyword, (value, opt_where))
            found.append(_candidate(alias, where, values))
        return found


def _candidate(alias: str, where: str, values: dict[str, tuple[str, str]]) -> Candidate:
    candidate = Candidate(alias=alias, source=where)
    hostname = values.get("hostname", (alias, ""))[0]
    # %h is the alias itself; %% a literal percent. Other tokens need a live ssh to expand.
    candidate.address = hostname.replace("%h", alias).replace("%%", "%")
    if "%" in candidate.address:
        candidate.problem = f"HostName {hostname!r} uses a token that cannot be expanded here"
    if "port" in values:
        try:
            candidate.port = parse_port(values["port"][0])
        except ValueError as exc:
            candidate.problem = f"{values['port'][1]}: {exc}"
    candidate.username = values.get("user", ("", ""))[0]
    candidate.identity_file = values.get("identityfile", ("", ""))[0]
    if candidate.identity_file.lower() == "none":
        candidate.identity_file = ""
    jump = values.get("proxyjump", ("", ""))[0]
    candidate.proxy_jump = "" if jump.lower() == "none" else jump
    return candidate


def read_config_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    return decode_source(data, str(path))


def parse_ssh_config(text: str, name: str, base_dir: Path | None = None) -> ParsedSource:
    """Candidates from config text. Include is followed only when ``base_dir`` is given."""
    reader = _Reader(base_dir)
    reader.read_text(text, name)
    return ParsedSource(reader.candidates(), reader.notes, key_base_dir=base_dir)


def read_ssh_config(path: Path) -> ParsedSource:
    """Candidates from a config file, following its Include lines."""
    path = path.expanduser()
    return parse_ssh_config(read_config_file(path), str(path), base_dir=path.resolve().parent)
