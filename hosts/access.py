"""What a client may do on a host: its grants, the command rules that apply, its limits.

A client's permissions on a host are the union of its enabled grants (its own and its
groups') that cover the host. A command runs when at least one covering grant that lets
the client execute allows it under ``hosts.policy.decide``; every deny and approve rule of
every covering grant, of the host and of its tags applies to all of them, so deny wins.

The snapshot of a client's grants and rules is kept for ``CACHE_SECONDS`` per process:
this runs before every call, and an admin's change reaches every server within a second
(at once in this process: saving the models clears the cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from django.db.models import Q
from django.db.models.signals import m2m_changed, post_delete, post_save

from hosts import sudo_rule
from hosts.access_models import ClientGroup, CommandRule, Grant, McpClient
from hosts.clients import mark_used
from hosts.models import Host
from hosts.policy import Decision, Rule, Verdict, decide
from hosts.readonly import refusal as read_only_refusal

CACHE_SECONDS = 1.0

VERDICT_RANK = {Verdict.ALLOW: 2, Verdict.APPROVE: 1, Verdict.DENY: 0}


@dataclass(frozen=True)
class GrantView:
    """One grant, flattened for evaluation."""

    id: int
    all_hosts: bool
    host_ids: frozenset[int]
    tags: frozenset[str]
    can_list: bool
    can_execute: bool
    can_read_files: bool
    can_write_files: bool
    can_sudo: bool
    read_only: bool
    can_adhoc_connect: bool
    adhoc_trust_on_first_use: bool
    rules: tuple[Rule, ...]

    def covers(self, host_id: int, host_tags: Iterable[str]) -> bool:
        return self.all_hosts or host_id in self.host_ids or not self.tags.isdisjoint(host_tags)


@dataclass(frozen=True)
class Limits:
    concurrent_calls: int | None
    calls_per_minute: int | None
    open_sessions: int | None


@dataclass(frozen=True)
class ClientAccess:
    """A client's state, grants and the host/tag rules, as of ``loaded_at``."""

    client_id: int
    name: str
    problem: str  # why the client may not act at all ("" when it may)
    limits: Limits
    grants: tuple[GrantView, ...]
    host_rules: dict[int, tuple[Rule, ...]] = field(default_factory=dict)
    tag_rules: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    loaded_at: float = 0.0

    def grants_for(self, host: Host) -> list[GrantView]:
        tags = host.tag_list
        return [g for g in self.grants if g.covers(host.pk, tags)]

    def can_list(self, host: Host) -> bool:
        return any(g.can_list for g in self.grants_for(host))

    def can_connect(self, host: Host) -> bool:
        return any(g.can_execute or g.can_read_files or self.writes(g) for g in self.grants_for(host))

    def can_read(self, host: Host) -> bool:
        return any(g.can_read_files for g in self.grants_for(host))

    def can_write(self, host: Host) -> bool:
        return any(self.writes(g) for g in self.grants_for(host))

    @staticmethod
    def writes(grant: GrantView) -> bool:
        return grant.can_write_files and not grant.read_only

    def shared_rules(self, host: Host) -> tuple[Rule, ...]:
        rules = list(self.host_rules.get(host.pk, ()))
        for tag in host.tag_list:
            rules.extend(self.tag_rules.get(tag, ()))
        return tuple(rules)

    def command(self, host: Host, command: str, sudo: bool) -> Decision:
        """Whether ``command`` may run on ``host`` now, after approval, or not at all."""
        covering = [g for g in self.grants_for(host) if g.can_execute]
        if not covering:
            return Decision(Verdict.DENY, f"client '{self.name}' may not run commands on host '{host.name}'")
        if sudo:
            covering = [g for g in covering if g.can_sudo]
            if not covering:
                return Decision(Verdict.DENY, f"client '{self.name}' may not use sudo on host '{host.name}'")
        shared = self.shared_rules(host)
        # Deny and approve rules of every covering grant bind all of them; allow rules only their own.
        binding = tuple(r for g in covering for r in g.rules if r.action != "allow")
        best: Decision | None = None
        for grant in covering:
            own_allow = tuple(r for r in grant.rules if r.action == "allow")
            decision = decide(command, binding + own_allow + shared, allow_list_required=grant.read_only)
            # A read-only grant also refuses what could write, whatever its allow rules say.
            refused = grant.read_only and read_only_refusal(command, [r.pattern for r in own_allow])
            if refused and decision.verdict != Verdict.DENY:
                decision = Decision(Verdict.DENY, f"{refused} (grant {grant.id})")
            if best is None or VERDICT_RANK[decision.verdict] > VERDICT_RANK[best.verdict]:
                best = decision
        assert best is not None
        return best


def _rule(rule: CommandRule, source: str) -> Rule:
    return Rule(action=rule.action, pattern=rule.pattern, source=source)


def load(client_id: int) -> ClientAccess:
    """Read a client's access from the database (uncached)."""
    client = McpClient.objects.filter(pk=client_id).first()
    if client is None:
        return ClientAccess(client_id, "?", "this client no longer exists", Limits(None, None, None), ())
    problem = client.refusal()
    # Over HTTP authentication records the use; a stdio client is only ever loaded here.
    mark_used(client)
    group_ids = list(ClientGroup.objects.filter(clients=client).values_list("id", flat=True))
    grants = (
        Grant.objects.filter(Q(client=client) | Q(group_id__in=group_ids), enabled=True)
        .prefetch_related("hosts", "rules")
        .order_by("id")
    )
    views = tuple(
        GrantView(
            id=g.pk,
            all_hosts=g.all_hosts,
            host_ids=frozenset(h.pk for h in g.hosts.all()),
            tags=frozenset(g.tag_list),
            can_list=g.can_list,
            can_execute=g.can_execute,
            can_read_files=g.can_read_files,
            can_write_files=g.can_write_files,
            can_sudo=g.can_sudo,
            read_only=g.read_only,
            can_adhoc_connect=g.can_adhoc_connect,
            adhoc_trust_on_first_use=g.adhoc_trust_on_first_use,
            rules=tuple(_rule(r, f"grant {g.pk}") for r in g.rules.all() if r.enabled),
        )
        for g in grants
    )
    host_rules: dict[int, list[Rule]] = {}
    tag_rules: dict[str, list[Rule]] = {}
    shared = CommandRule.objects.filter(enabled=True, grant__isnull=True).select_related("host")
    for r in shared:
        if r.host_id is not None:
            host_rules.setdefault(r.host_id, []).append(
                _rule(r, f"host {r.host.name if r.host else r.host_id}")
            )
        elif r.tag:
            tag_rules.setdefault(r.tag, []).append(_rule(r, f"tag {r.tag}"))
    return ClientAccess(
        client_id=client.pk,
        name=client.name,
        problem=problem,
        limits=Limits(client.max_concurrent_calls, client.max_calls_per_minute, client.max_open_sessions),
        grants=views,
        host_rules={k: tuple(v) for k, v in host_rules.items()},
        tag_rules={k: tuple(v) for k, v in tag_rules.items()},
        loaded_at=time.monotonic(),
    )


_cache: dict[int, ClientAccess] = {}
_cache_lock = threading.Lock()


_reloading: set[int] = set()


def access_for(client_id: int) -> ClientAccess:
    """The client's access, re-read from the database at most every ``CACHE_SECONDS``.

    When a snapshot goes stale, one thread reloads it while the others keep using the old one
    for that moment, instead of every call thread of a busy client querying at once.
    """
    cached = _cache.get(client_id)
    if cached is not None and time.monotonic() - cached.loaded_at < CACHE_SECONDS:
        return cached
    with _cache_lock:
        if cached is not None and client_id in _reloading:
            return cached
        _reloading.add(client_id)
    try:
        fresh = load(client_id)
        with _cache_lock:
            _cache[client_id] = fresh
    finally:
        with _cache_lock:
            _reloading.discard(client_id)
    return fresh


def cached(client_id: int) -> ClientAccess | None:
    """The client's snapshot if this process holds a fresh one (no database query), else None."""
    snapshot = _cache.get(client_id)
    if snapshot is not None and time.monotonic() - snapshot.loaded_at < CACHE_SECONDS:
        return snapshot
    return None


def forget(*args: object, **kwargs: object) -> None:
    """Drop every cached snapshot (connected to the models' save and delete signals)."""
    with _cache_lock:
        _cache.clear()


for _model in (McpClient, ClientGroup, Grant, CommandRule):
    post_save.connect(forget, sender=_model, dispatch_uid=f"access-forget-save-{_model.__name__}")
    post_delete.connect(forget, sender=_model, dispatch_uid=f"access-forget-delete-{_model.__name__}")
for _through in (Grant.hosts.through, McpClient.groups.through):
    m2m_changed.connect(forget, sender=_through, dispatch_uid=f"access-forget-m2m-{_through.__name__}")
# A host's tags decide which grants and rules cover it.
post_save.connect(forget, sender=Host, dispatch_uid="access-forget-host")


def visible_hosts(access: ClientAccess, hosts: Sequence[Host]) -> list[Host]:
    if access.problem:
        return []
    return [h for h in hosts if access.can_list(h)]


# -- authorization --------------------------------------------------------------------------------


class Permission(StrEnum):
    """What a call needs on its host."""

    CONNECT = "connect"
    EXECUTE = "execute"
    READ = "read"
    WRITE = "write"
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class Authorization:
    """Whether a client may make a call on a host, and what the audit row keeps of the answer."""

    refusal: str = ""  # one line for the client; "" when the call may go on
    audit_error: str = ""  # the true reason, where ``refusal`` hides it from the client
    decision: Decision | None = None  # for commands: the policy's verdict (it may ask for approval)
    sudo_exposed_to: tuple[str, ...] = ()  # who could catch the sudo password, when that refused it

    @property
    def allowed(self) -> bool:
        return not self.refusal


def unavailable(host_name: str, client_name: str) -> str:
    """The one answer for a host the client may not see, whether registered or not.

    An unregistered host and one registered but not granted must read the same, byte for
    byte, or a client could probe the inventory; the audit row keeps the true reason.
    """
    return (
        f"host '{host_name}' is not available to client '{client_name}' "
        "(not registered, or not granted to it); ssh_list_hosts shows yours"
    )


def hidden_reason(access: ClientAccess, host_name: str, host: Host | None) -> str:
    """For the audit row: why ``host_name`` is unavailable to the client ("" when it is available)."""
    if host is None:
        return f"no host named {host_name!r} is registered"
    if not access.grants_for(host):
        state = "registered" if host.enabled else "registered (and disabled)"
        return f"host '{host.name}' is {state} but no grant of client '{access.name}' covers it"
    return ""


def sudo_exposure(host: Host) -> tuple[str, tuple[str, ...]]:
    """Why the sudo password rule refuses sudo on ``host`` ("" when it allows it), and to whom.

    Checked on every sudo call (and again when an approved one runs): a grant changed
    since is taken into account. Without a sudo password there is nothing to expose.
    """
    credential = host.credential
    if credential is None or not credential.has_sudo_password:
        return "", ()
    exposures = sudo_rule.exposures_for_host(host.pk)
    if not exposures:
        return "", ()
    return sudo_rule.refusal(host.name, exposures), tuple(e.describe() for e in exposures)


def authorize(
    access: ClientAccess, host: Host, permission: Permission, *, command: str = "", sudo: bool = False
) -> Authorization:
    """Whether the client may make a ``permission`` call on ``host`` (with ``command`` for EXECUTE)."""
    if access.problem:
        return Authorization(access.problem)
    if permission is Permission.DISCONNECT:
        return Authorization()  # closing one's own session is always allowed
    who = f"client '{access.name}'"
    if not access.grants_for(host):
        return Authorization(unavailable(host.name, access.name), hidden_reason(access, host.name, host))
    if permission is Permission.EXECUTE:
        decision = access.command(host, command, sudo)
        if decision.verdict == Verdict.DENY:
            return Authorization(decision.reason, decision=decision)
        if sudo:
            exposed, to = sudo_exposure(host)
            if exposed:
                return Authorization(exposed, decision=decision, sudo_exposed_to=to)
        return Authorization(decision=decision)
    refused = {
        Permission.READ: not access.can_read(host) and f"{who} may not read files on host '{host.name}'",
        Permission.WRITE: not access.can_write(host) and f"{who} may not write files on host '{host.name}'",
        Permission.CONNECT: not access.can_connect(host)
        and f"{who} may not open sessions on host '{host.name}'",
    }[permission]
    return Authorization(refused or "")
