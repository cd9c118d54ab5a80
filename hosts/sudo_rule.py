"""The sudo password rule: who else could capture a credential's sudo password.

``ssh_execute(sudo=true)`` sends the credential's sudo password into the remote account as the
first line of stdin. Whatever can run a command as that account, or write one of its files,
controls every shell sshcontrol starts there: shell start-up files (``~/.bashrc`` is read even
by ``ssh host cmd``), functions (bash allows ``function /usr/bin/sudo { ...; }``), ``PATH``, and
can simply read stdin before the command runs. No way of invoking sudo survives that, so the
password is exposed to everyone who can execute or write as the account.

The rule therefore is: a sudo password is used on a host only when no client lacking sudo can
run commands (any execute grant, read-only included: their commands run as the very account,
and the secret should not rest on a classifier of command text) or upload files (a write
grant that is not read-only) as the same remote account.
The same account is reached through every host that uses the same credential, has the same
address (case-insensitively, IP literals in one spelling), port and login name, or has the same
login name on a server showing one of the same host keys; a client lacking sudo on one of those
hosts counts. Only enabled grants of clients that may act now count; a client that planted code
before it lost its grants is not seen (see docs/security.md).

The evaluation (``find_exposures``) is a pure function over plain facts, loaded from the
database in six queries by ``load_facts``; callers: ``sshcontrol.hostcall`` (refuses
the call), ``sshcontrol.checks`` (``sshcontrol check``) and the host, credential and grant
admin pages (warnings).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from django.db.models import Prefetch

from hosts.access_models import ClientGroup, Grant, McpClient
from hosts.models import Host, HostKey

CHECK_ID = "sshcontrol.W020"
DOC_POINTER = "docs/security.md, 'The sudo password rule'"


def canonical_address(address: str) -> str:
    """One spelling per address: case and a trailing dot ignored, IP literals in standard form."""
    text = address.strip().casefold().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass(frozen=True)
class AccountHost:
    """A registered host, reduced to what decides which remote account it logs in to."""

    id: int
    name: str
    enabled: bool
    credential_id: int | None
    credential_name: str
    has_sudo_password: bool
    address: str
    port: int
    username: str
    tags: frozenset[str]
    # Fingerprints of the host keys stored for it (trusted or pending): the server it reaches.
    host_keys: frozenset[str] = frozenset()

    @property
    def account(self) -> tuple[str, int, str]:
        return (canonical_address(self.address), self.port, self.username)

    @property
    def account_text(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"

    def same_account(self, other: AccountHost) -> bool:
        same_credential = self.credential_id is not None and self.credential_id == other.credential_id
        # Another name of the same server (a DNS name and an IP address, another address or
        # port of the same sshd) shows the same host key: the same login name there is the
        # same account.
        same_server = not self.host_keys.isdisjoint(other.host_keys)
        return (
            same_credential
            or self.account == other.account
            or (same_server and self.username == other.username)
        )


@dataclass(frozen=True)
class GrantFacts:
    """One enabled grant: the clients it reaches (directly or through a group) and its powers."""

    id: int
    clients: frozenset[str]
    all_hosts: bool
    host_ids: frozenset[int]
    tags: frozenset[str]
    can_execute: bool
    can_write_files: bool
    can_sudo: bool
    read_only: bool

    def covers(self, host: AccountHost) -> bool:
        return self.all_hosts or host.id in self.host_ids or not self.tags.isdisjoint(host.tags)

    @property
    def acts_as_account(self) -> bool:
        """Runs commands or writes files as the host's account: either can plant start-up code."""
        return self.can_execute or (self.can_write_files and not self.read_only)

    @property
    def sudo(self) -> bool:
        return self.can_execute and self.can_sudo


@dataclass(frozen=True)
class Exposure:
    """``client`` lacks sudo on ``via_host`` yet can ``how`` there, in the account of ``sudo_host``."""

    sudo_host: str
    credential: str
    account: str
    client: str
    via_host: str
    how: str  # "run commands", "write files" or "run commands and write files"
    grant_ids: tuple[int, ...]

    def describe(self) -> str:
        via = "" if self.via_host == self.sudo_host else f" through host '{self.via_host}'"
        grants = ", ".join(f"#{g}" for g in self.grant_ids)
        return f"client '{self.client}' can {self.how}{via} without sudo (grant {grants})"


@dataclass(frozen=True)
class Facts:
    hosts: tuple[AccountHost, ...]
    grants: tuple[GrantFacts, ...]

    def host(self, host_id: int) -> AccountHost | None:
        return next((h for h in self.hosts if h.id == host_id), None)


def _powers(grants: Iterable[GrantFacts], client: str, host: AccountHost) -> list[GrantFacts]:
    return [g for g in grants if client in g.clients and g.covers(host)]


def sudo_clients(facts: Facts, host: AccountHost) -> list[str]:
    """Clients that may run commands with sudo on ``host``."""
    names = {c for g in facts.grants if g.sudo and g.covers(host) for c in g.clients}
    return sorted(names)


def password_holders(facts: Facts, target: AccountHost) -> set[str]:
    """Clients that may send ``target``'s sudo password with a sudo call of their own.

    Sudo on ``target`` or on another host entry with the same credential (the same password):
    such a client could capture the password anyway, so it is trusted with it. Sudo through a
    host entry with another credential is not enough: that credential's sudo password (or none)
    is what its calls send, not this one.
    """
    same_password = [
        h
        for h in facts.hosts
        if h.id == target.id
        or (h.enabled and target.credential_id is not None and h.credential_id == target.credential_id)
    ]
    return {c for g in facts.grants if g.sudo for h in same_password if g.covers(h) for c in g.clients}


def find_exposures(facts: Facts, target: AccountHost) -> list[Exposure]:
    """Who could capture the sudo password sent to ``target``'s account (an empty list: nobody).

    For every host of the same account (``target`` included, disabled ones skipped) and every
    client with a grant there that runs commands or writes files: an exposure unless it holds
    the password anyway (``password_holders``: sudo where this credential is used).
    """
    found: list[Exposure] = []
    account_hosts = [h for h in facts.hosts if h.id == target.id or (h.enabled and h.same_account(target))]
    clients = sorted({c for g in facts.grants for c in g.clients})
    trusted = password_holders(facts, target)
    for host in sorted(account_hosts, key=lambda h: (h.id != target.id, h.name)):
        for client in clients:
            if client in trusted:
                continue
            powers = _powers(facts.grants, client, host)
            acting = [g for g in powers if g.acts_as_account]
            if not acting:
                continue
            executes = any(g.can_execute for g in acting)
            writes = any(g.can_write_files and not g.read_only for g in acting)
            how = " and ".join(w for w, on in (("run commands", executes), ("write files", writes)) if on)
            found.append(
                Exposure(
                    sudo_host=target.name,
                    credential=target.credential_name,
                    account=target.account_text,
                    client=client,
                    via_host=host.name,
                    how=how,
                    grant_ids=tuple(sorted(g.id for g in acting)),
                )
            )
    return found


# A host whose sudo calls the rule refuses, the clients with sudo there, and who could capture it.
ExposedHost = tuple[AccountHost, list[str], list[Exposure]]


def exposed_sudo_hosts(facts: Facts) -> list[ExposedHost]:
    """Every enabled host whose sudo password some client may use while others could capture it.

    Each entry: the host, the clients with sudo there, and the exposures.
    """
    out: list[ExposedHost] = []
    for host in facts.hosts:
        if not host.enabled or not host.has_sudo_password:
            continue
        users = sudo_clients(facts, host)
        if not users:
            continue  # nobody may send the password there
        exposures = find_exposures(facts, host)
        if exposures:
            out.append((host, users, exposures))
    return out


Scope = Literal["host", "credential", "grant"]


def involving(facts: Facts, scope: Scope, object_id: int) -> list[ExposedHost]:
    """The exposed hosts a host, credential or grant takes part in (for its admin page).

    A host: it is the exposed one or the one a client acts through. A credential: it is the
    exposed host's. A grant: it gives the power to capture, or sudo on the exposed host.
    """
    grant = next((g for g in facts.grants if g.id == object_id), None)
    page_host = facts.host(object_id)

    def takes_part(entry: ExposedHost) -> bool:
        host, _users, exposures = entry
        if scope == "host":
            return page_host is not None and page_host.name in {host.name} | {e.via_host for e in exposures}
        if scope == "credential":
            return host.credential_id == object_id
        exposing = {g for e in exposures for g in e.grant_ids}
        return object_id in exposing or (grant is not None and grant.sudo and grant.covers(host))

    return [e for e in exposed_sudo_hosts(facts) if takes_part(e)]


# -- loading the facts -----------------------------------------------------------------------


def _host_facts(host: Host, keys: dict[int, set[str]]) -> AccountHost:
    credential = host.credential
    return AccountHost(
        id=host.pk,
        name=host.name,
        enabled=host.enabled,
        credential_id=host.credential_id,
        credential_name=credential.name if credential is not None else "",
        has_sudo_password=credential is not None and credential.has_sudo_password,
        address=host.address,
        port=host.port,
        username=host.username,
        tags=frozenset(host.tag_list),
        host_keys=frozenset(keys.get(host.pk, ())),
    )


def load_facts() -> Facts:
    """Every host and every enabled grant of a client that may act now (a few queries)."""
    keys: dict[int, set[str]] = {}
    for host_id, fingerprint in HostKey.objects.exclude(state=HostKey.State.REVOKED).values_list(
        "host_id", "fingerprint"
    ):
        keys.setdefault(host_id, set()).add(fingerprint)
    hosts = tuple(
        _host_facts(h, keys)
        for h in Host.objects.select_related("credential").only(
            "id",
            "name",
            "enabled",
            "address",
            "port",
            "username",
            "tags",
            "credential__id",
            "credential__name",
            "credential__sudo_password_encrypted",
        )
    )
    active = [c for c in McpClient.objects.all() if c.state() == "active"]
    names = {c.pk: c.name for c in active}
    members: dict[int, set[str]] = {}
    for group_id, client_id in ClientGroup.clients.through.objects.values_list(
        "clientgroup_id", "mcpclient_id"
    ):
        if client_id in names:
            members.setdefault(group_id, set()).add(names[client_id])
    grants = Grant.objects.filter(enabled=True).prefetch_related(
        Prefetch("hosts", queryset=Host.objects.only("id"))
    )
    facts: list[GrantFacts] = []
    for g in grants:
        if g.client_id is not None:
            clients = {names[g.client_id]} if g.client_id in names else set()
        else:
            clients = members.get(g.group_id or 0, set())
        if not clients:
            continue
        facts.append(
            GrantFacts(
                id=g.pk,
                clients=frozenset(clients),
                all_hosts=g.all_hosts,
                host_ids=frozenset(h.pk for h in g.hosts.all()),
                tags=frozenset(g.tag_list),
                can_execute=g.can_execute,
                can_write_files=g.can_write_files,
                can_sudo=g.can_sudo,
                read_only=g.read_only,
            )
        )
    return Facts(hosts=hosts, grants=tuple(facts))


def exposures_for_host(host_id: int) -> list[Exposure]:
    """The exposures of one host's sudo password, from the database (for a sudo call)."""
    facts = load_facts()
    target = facts.host(host_id)
    return find_exposures(facts, target) if target is not None else []


def refusal(host_name: str, exposures: Sequence[Exposure]) -> str:
    """The caller's message: why sudo is refused and how an administrator fixes it.

    Other clients are counted, not named: the caller learns no one else's grants.
    """
    count = len({e.client for e in exposures})
    whom = "another client" if count == 1 else f"{count} other clients"
    return (
        f"sudo is refused on host '{host_name}': its sudo password would be sent into the remote "
        f"account {exposures[0].account}, where {whom} without sudo can run commands or write files "
        "and so could capture it (with shell start-up code). An administrator must give them sudo "
        "there, take away their execute and write permissions on that account, or use a separate "
        f"login account for sudo; `sshcontrol check` names them ({CHECK_ID})"
    )


def warning_lines(entries: Iterable[ExposedHost]) -> list[str]:
    """One line per exposed host, naming everyone involved (for admins only)."""
    return [
        f"sudo on host '{host.name}' is refused (for {', '.join(repr(u) for u in users)}): the sudo "
        f"password of credential '{host.credential_name}' would be exposed in account {host.account_text}, "
        "where " + "; ".join(e.describe() for e in exposures) + "."
        for host, users, exposures in entries
    ]
