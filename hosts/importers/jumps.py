"""Imported ``ProxyJump`` chains turned into ``Host.jump_host`` links.

``ProxyJump a,b`` on target ``t`` means ssh reaches ``a``, then ``b`` through ``a``, then
``t`` through ``b``: the links are ``t -> b`` and ``b -> a``. Each hop is matched to a
host of this import or an already registered one, by name first (the source's alias, or
the host name made of it), then by address (and port, when the hop gives one). A hop that
matches nothing, or more than one host, is reported and the link is not made; a link
never replaces a jump host already set on a hop, and a link that would make a loop is
refused. ``apply_import`` runs this after every candidate has its host, so a hop may come
later in the file than the hosts it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from hosts.importers import host_name_for
from hosts.models import Host, JumpLoop


@dataclass(frozen=True)
class Hop:
    """One ``[user@]host[:port]`` of a ProxyJump value."""

    host: str
    user: str = ""
    port: int | None = None


def parse_proxy_jump(value: str) -> list[Hop]:
    """The hops of a ProxyJump value, outermost first; ``none`` and empty give none.

    Raises ValueError for a hop that is not ``[user@]host[:port]`` (or ``ssh://`` of it).
    """
    text = value.strip()
    if not text or text.lower() == "none":
        return []
    return [_parse_hop(part.strip()) for part in text.split(",")]


def _parse_hop(text: str) -> Hop:
    rest = text.removeprefix("ssh://")
    user, at, hostport = rest.rpartition("@")
    if not at:
        user, hostport = "", rest
    port: int | None = None
    if hostport.startswith("["):  # [IPv6]:port
        host, _, tail = hostport[1:].partition("]")
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"ProxyJump hop {text!r} has no valid port")
        port = int(port_text)
    else:
        host = hostport
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"ProxyJump hop {text!r} names no host")
    return Hop(host=host, user=user, port=port)


class HopResolver:
    """Finds the host a hop names, among this import's hosts and the registered ones."""

    def __init__(self, imported: dict[str, Host]) -> None:
        self.imported = imported  # source alias -> the host made or updated from it

    def find(self, hop: Hop) -> tuple[Host | None, str]:
        """The host, or None and why not."""
        by_alias = self.imported.get(hop.host)
        if by_alias is not None:
            return by_alias, ""
        named = Host.objects.filter(name__in={hop.host, host_name_for(hop.host)}).first()
        if named is not None:
            return named, ""
        by_address = list(Host.objects.filter(address=hop.host))
        if hop.port is not None:
            by_address = [h for h in by_address if h.port == hop.port]
        if len(by_address) == 1:
            return by_address[0], ""
        if by_address:
            names = ", ".join(sorted(h.name for h in by_address))
            return None, f"jump host {hop.host} matches several hosts ({names})"
        return None, f"jump host {hop.host} is not a registered host"


def link_chain(target: Host, hops: list[Hop], resolver: HopResolver) -> tuple[bool, list[str]]:
    """Link ``target`` to its last hop and each hop to the one before; (target changed, notes).

    Hops are saved here when a link is added to them; ``target`` is left for the caller to save.
    """
    found: list[Host] = []
    for hop in hops:
        host, why = resolver.find(hop)
        if host is None:
            return False, [f"{why}: not linked (register it, then set the jump host)"]
        found.append(host)
    notes: list[str] = []
    for outer, inner in pairwise(found):
        if inner.jump_host_id == outer.pk:
            continue
        if inner.jump_host_id is not None:
            notes.append(
                f"jump host {inner.name} already goes through {inner.jump_host}; left as it is, "
                f"not through {outer.name}"
            )
            continue
        inner.jump_host = outer
        if _loops(inner, notes):
            inner.jump_host = None
            return False, notes
        inner.save(update_fields=["jump_host", "updated_at"])
        notes.append(f"jump host {inner.name} now goes through {outer.name}")
    last = found[-1]
    if target.jump_host_id == last.pk:
        return False, notes
    previous = target.jump_host
    target.jump_host = last
    if _loops(target, notes):
        target.jump_host = previous
        return False, notes
    return True, notes


def _loops(host: Host, notes: list[str]) -> bool:
    try:
        host.jump_chain()
    except JumpLoop as exc:
        notes.append(f"{exc}: not linked")
        return True
    return False
