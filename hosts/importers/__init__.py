"""Reading hosts from other tools' inventories: OpenSSH client configs and Ansible inventories.

Each reader turns a file into ``Candidate`` hosts without touching the database;
``hosts.importers.apply`` decides what to create, update or skip and reports it per host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# A config or inventory is text of a few hundred kilobytes at most; this keeps a wrong
# file (or a hostile upload) from being read into memory whole.
MAX_SOURCE_BYTES = 2 * 1024 * 1024

_NOT_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


class InventoryError(ValueError):
    """The file as a whole cannot be read (not text, bad syntax, an Include loop...)."""


@dataclass
class Candidate:
    """One host as a source file describes it, before any decision about the database.

    ``password`` holds a login password found in an inventory variable; it is kept out of
    ``repr`` so a debugging print or a traceback never shows it.
    """

    alias: str  # the name in the source: the Host pattern or the inventory hostname
    source: str  # "file:line" or "file (group)" for the report
    address: str = ""
    port: int | None = None
    username: str = ""
    identity_file: str = ""
    proxy_jump: str = ""
    tags: list[str] = field(default_factory=list)
    password: str = field(default="", repr=False)
    password_var: str = ""  # the variable the password came from, for the report
    notes: list[str] = field(default_factory=list)
    problem: str = ""  # set when the host cannot be imported; the reason it is skipped

    @property
    def name(self) -> str:
        return host_name_for(self.alias)


@dataclass
class ParsedSource:
    """What a reader found: the hosts, and notes about the file as a whole."""

    candidates: list[Candidate]
    notes: list[str] = field(default_factory=list)
    # Where relative key file paths start; None when the source has no place on this
    # machine (an upload), and then key files are not read at all.
    key_base_dir: Path | None = None


def host_name_for(alias: str) -> str:
    """A host name (a slug) for a source alias: ``web.example.com`` becomes ``web-example-com``."""
    return _NOT_SLUG.sub("-", alias).strip("-")[:100]


def parse_port(raw: object) -> int:
    """A TCP port from a config value. Raises ValueError with a message for the report."""
    text = str(raw).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def decode_source(data: bytes, what: str) -> str:
    """Bytes of a config file as text. Raises InventoryError when it is too large or not UTF-8."""
    if len(data) > MAX_SOURCE_BYTES:
        raise InventoryError(f"{what} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InventoryError(f"{what} is not UTF-8 text") from None
