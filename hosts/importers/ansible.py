"""Hosts from an Ansible inventory, INI or YAML.

Both formats are read into one group tree (``all`` at the root, ``ungrouped`` for hosts
in no group) and variables are merged the way Ansible merges them: ``all``, then the
groups from the shallowest to the deepest (same depth: by ``ansible_group_priority``,
then by name), then the host's own variables. A host's groups, parents included,
become its tags.

Only connection variables are read. Values are taken literally: Jinja expressions are
not evaluated and vault-encrypted values are not decrypted; both are reported.
"""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hosts.importers import (
    MAX_SOURCE_BYTES,
    Candidate,
    InventoryError,
    ParsedSource,
    decode_source,
    parse_port,
)

ALL = "all"
UNGROUPED = "ungrouped"

ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
USER_VARS = ("ansible_user", "ansible_ssh_user", "ansible_remote_user")
KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
PASSWORD_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
# Where ssh arguments (-J, -o ProxyJump=) are found, the first that names a jump host winning.
JUMP_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
# Secrets sshcontrol has no use for: never stored, only reported as ignored.
IGNORED_SECRET_VARS = (
    "ansible_become_password",
    "ansible_become_pass",
    "ansible_sudo_pass",
    "ansible_sudo_password",
    "ansible_ssh_private_key_passphrase",
)

_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
_SECTION = re.compile(r"^\[([^\]]+)\]\s*(?:[#;].*)?$")
MAX_RANGE_HOSTS = 10_000


class Vaulted:
    """A ``!vault`` value: kept opaque, never decrypted."""

    def __repr__(self) -> str:
        return "<vault-encrypted>"


@dataclass
class _Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@dataclass
class _Inventory:
    source: str
    groups: dict[str, _Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_where: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def group(self, name: str) -> _Group:
        if name not in self.groups:
            self.groups[name] = _Group(name)
        return self.groups[name]

    def add_host(self, group: str, name: str, variables: dict[str, Any], where: str) -> None:
        hosts = self.group(group).hosts
        if name not in hosts:
            hosts.append(name)
        self.host_vars.setdefault(name, {}).update(variables)
        self.host_where.setdefault(name, where)

    def add_child(self, parent: str, child: str) -> None:
        self.group(child)
        children = self.group(parent).children
        if child not in children:
            children.append(child)

    # -- resolution ------------------------------------------------------------------------

    def _parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {name: set() for name in self.groups}
        for group in self.groups.values():
            for child in group.children:
                parents[child].add(group.name)
        for name, found in parents.items():
            if name != ALL and not found:
                found.add(ALL)
        return parents

    def _depths(self, parents: dict[str, set[str]]) -> dict[str, int]:
        depths: dict[str, int] = {}

        def depth(name: str, path: tuple[str, ...]) -> int:
            if name in depths:
                return depths[name]
            if name == ALL or name in path:  # a children loop counts as the root
                return 0
            value = 1 + max(depth(p, (*path, name)) for p in parents[name])
            depths[name] = value
            return value

        for name in self.groups:
            depth(name, ())
        return depths

    def candidates(self) -> list[Candidate]:
        self.group(ALL)
        parents = self._parents()
        depths = self._depths(parents)
        direct: dict[str, list[str]] = {}
        for group in self.groups.values():
            for host in group.hosts:
                direct.setdefault(host, []).append(group.name)
        found = []
        for host, groups in direct.items():
            ancestry: set[str] = set()
            todo = list(groups)
            while todo:
                name = todo.pop()
                if name not in ancestry:
                    ancestry.add(name)
                    todo.extend(parents.get(name, ()))
            ancestry.add(ALL)
            ordered = sorted(
                ancestry,
                key=lambda g: (depths.get(g, 0), _priority(self.groups[g].vars), g),
            )
            merged: dict[str, Any] = {}
            for name in ordered:
                merged.update(self.groups[name].vars)
            merged.update(self.host_vars.get(host, {}))
            tags = [g for g in ordered if g not in (ALL, UNGROUPED)]
            found.append(_candidate(host, self.host_where.get(host, self.source), merged, tags))
        return found


def _priority(variables: dict[str, Any]) -> int:
    try:
        return int(variables.get("ansible_group_priority", 1))
    except (TypeError, ValueError):
        return 1


def _first(variables: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any] | None:
    for name in names:
        if name in variables and variables[name] is not None:
            return name, variables[name]
    return None


def _literal(name: str, value: Any, candidate: Candidate) -> str | None:
    """A variable's value as plain text, or None (with a note) when it cannot be used as is."""
    if isinstance(value, Vaulted):
        candidate.notes.append(f"{name} is vault-encrypted and was not decrypted; ignored")
        return None
    if isinstance(value, dict | list):
        candidate.notes.append(f"{name} is not a plain value; ignored")
        return None
    text = str(value).strip()
    if "{{" in text or "{%" in text:
        candidate.notes.append(f"{name} is a template ({text}) and was not evaluated; ignored")
        return None
    return text


def _candidate(host: str, where: str, variables: dict[str, Any], tags: list[str]) -> Candidate:
    candidate = Candidate(alias=host, source=where, tags=tags)
    connection = str(variables.get("ansible_connection", "ssh"))
    if connection not in ("ssh", "paramiko", "smart"):
        candidate.problem = f"ansible_connection={connection} is not an SSH connection"
        return candidate
    candidate.address = host
    if found := _first(variables, ADDRESS_VARS):
        value = _literal(*found, candidate)
        if value:
            candidate.address = value
        elif value is None:
            # Connecting to the inventory name instead could reach another machine: skip.
            candidate.problem = candidate.notes.pop().removesuffix("; ignored")
    if found := _first(variables, PORT_VARS):
        value = _literal(*found, candidate)
        if value is not None:
            try:
                candidate.port = parse_port(value)
            except ValueError as exc:
                candidate.problem = f"{found[0]}: {exc}"
    if (found := _first(variables, USER_VARS)) and (value := _literal(*found, candidate)):
        candidate.username = value
    if (found := _first(variables, KEY_VARS)) and (value := _literal(*found, candidate)):
        candidate.identity_file = value
    if (found := _first(variables, PASSWORD_VARS)) and (value := _literal(*found, candidate)):
        candidate.password = value
        candidate.password_var = found[0]
    for name in IGNORED_SECRET_VARS:
        if name in variables:
            candidate.notes.append(f"{name} ignored (sshcontrol does not use it; not stored)")
    for name in JUMP_ARG_VARS:
        if name in variables:
            value = _literal(name, variables[name], candidate)
            candidate.proxy_jump = _proxy_jump_from_args(value or "")
            if candidate.proxy_jump:
                break
    return candidate


def _proxy_jump_from_args(args: str) -> str:
    """The jump host in ssh arguments such as ``-J bastion`` or ``-o ProxyJump=bastion``."""
    try:
        words = shlex.split(args)
    except ValueError:
        return ""
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if word == "-J":
            return following
        if word.startswith("-J") and len(word) > 2:
            return word[2:]
        option = word[2:] if word.startswith("-o") and len(word) > 2 else following if word == "-o" else ""
        # ssh takes "-o ProxyJump=x" and "-o 'ProxyJump x'" alike.
        key, _, value = option.strip().replace("=", " ", 1).partition(" ")
        if key.lower() == "proxyjump":
            return value.strip()
    return ""


def expand_host_pattern(pattern: str) -> list[str]:
    """``web[01:03].example.com`` -> web01, web02, web03 (also ``[a:c]`` and a stride ``[1:9:2]``)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    start, end, step_text = match.groups()
    step = int(step_text or 1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        letters = string.ascii_letters
        values = list(letters[letters.index(start) : letters.index(end) + 1 : step])
    else:
        raise ValueError(f"host range [{start}:{end}] is neither numeric nor single letters")
    if len(values) > MAX_RANGE_HOSTS:
        raise ValueError(f"host range in {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
    return [name for value in values for name in expand_host_pattern(head + value + tail)]


# -- INI ---------------------------------------------------------------------------------------


def _split_host_port(token: str) -> tuple[str, str | None]:
    """``host:2222`` -> (host, "2222"); IPv6 addresses and plain names are left alone."""
    if token.count(":") == 1:
        host, port = token.split(":")
        if port.isdigit():
            return host, port
    return token, None


def _ini_value(raw: str) -> str:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_ini(text: str, name: str) -> ParsedSource:
    inventory = _Inventory(name)
    section, kind = UNGROUPED, "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{name}:{number}"
        if not line or line.startswith(("#", ";")):
            continue
        if header := _SECTION.match(line):
            section, _, kind = header.group(1).strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise InventoryError(f"{where}: unknown section kind ':{kind}'")
            inventory.group(section)
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                inventory.notes.append(f"{where}: not a 'name=value' line, ignored")
                continue
            inventory.group(section).vars[key.strip()] = _ini_value(value)
        elif kind == "children":
            inventory.add_child(section, line.split()[0])
        else:
            _ini_host_line(inventory, section, line, where)
    return ParsedSource(inventory.candidates(), inventory.notes)


def _ini_host_line(inventory: _Inventory, group: str, line: str, where: str) -> None:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        inventory.notes.append(f"{where}: unbalanced quotes, line ignored")
        return
    if not words:
        return
    variables: dict[str, Any] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            inventory.notes.append(f"{where}: {key!r} is not name=value, ignored")
            continue
        variables[key] = value
    pattern, port = _split_host_port(words[0])
    if port is not None:
        variables.setdefault("ansible_port", port)
    try:
        names = expand_host_pattern(pattern)
    except ValueError as exc:
        inventory.notes.append(f"{where}: {exc}; line ignored")
        return
    for host in names:
        inventory.add_host(group, host, variables, where)


# -- YAML --------------------------------------------------------------------------------------


class _InventoryLoader(yaml.SafeLoader):
    """SafeLoader that knows Ansible's tags: ``!vault`` stays opaque, ``!unsafe`` is plain text."""


def _vault(loader: yaml.SafeLoader, node: yaml.Node) -> Vaulted:
    return Vaulted()


def _unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    return None


_InventoryLoader.add_constructor("!vault", _vault)
_InventoryLoader.add_constructor("!unsafe", _unsafe)


def parse_yaml(text: str, name: str) -> ParsedSource:
    try:
        data = yaml.load(text, Loader=_InventoryLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise InventoryError(f"{name}: not valid YAML{at}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InventoryError(f"{name}: a YAML inventory is a mapping of group names")
    inventory = _Inventory(name)
    for group, body in data.items():
        _yaml_group(inventory, str(group), body, ())
    return ParsedSource(inventory.candidates(), inventory.notes)


def _yaml_group(inventory: _Inventory, name: str, body: Any, path: tuple[str, ...]) -> None:
    group = inventory.group(name)
    if body is None:
        return
    where = f"{inventory.source} ({' > '.join((*path, name))})"
    if not isinstance(body, dict):
        inventory.notes.append(f"{where}: a group is a mapping of hosts, vars and children; ignored")
        return
    for key in body:
        if key not in ("hosts", "vars", "children"):
            inventory.notes.append(f"{where}: unknown key {key!r} ignored")
    variables = body.get("vars") or {}
    if isinstance(variables, dict):
        group.vars.update({str(k): v for k, v in variables.items()})
    hosts = body.get("hosts") or {}
    if isinstance(hosts, dict):
        for pattern, host_vars in hosts.items():
            try:
                names = expand_host_pattern(str(pattern))
            except ValueError as exc:
                inventory.notes.append(f"{where}: {exc}; ignored")
                continue
            values = {str(k): v for k, v in host_vars.items()} if isinstance(host_vars, dict) else {}
            for host in names:
                inventory.add_host(name, host, values, where)
    children = body.get("children") or {}
    if isinstance(children, dict):
        for child, child_body in children.items():
            inventory.add_child(name, str(child))
            if str(child) not in path:  # a loop is not followed twice
                _yaml_group(inventory, str(child), child_body, (*path, name))


# -- files -------------------------------------------------------------------------------------


def detect_format(text: str, name: str) -> str:
    """ "yaml" or "ini": by the file's extension, else by its first meaningful line."""
    suffix = Path(name).suffix.lower()
    if suffix in (".yml", ".yaml"):
        return "yaml"
    if suffix in (".ini", ".cfg"):
        return "ini"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line == "---" or re.match(r"^[\w.-]+:\s*$", line):
            return "yaml"
        return "ini"
    return "ini"


def parse_inventory(text: str, name: str, fmt: str = "auto") -> ParsedSource:
    fmt = detect_format(text, name) if fmt == "auto" else fmt
    return parse_yaml(text, name) if fmt == "yaml" else parse_ini(text, name)


def read_inventory(path: Path, fmt: str = "auto") -> ParsedSource:
    path = path.expanduser()
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    parsed = parse_inventory(decode_source(data, str(path)), str(path), fmt)
    parsed.key_base_dir = path.resolve().parent
    return parsed
