"""The numbers on the admin index: what happened in the last day and what needs an admin now.

Commands waiting for an approval come first: an agent is blocked on each of them.

Each card links to the admin list filtered to exactly the rows it counts, so a number is
never a dead end. Everything here is a handful of indexed COUNT queries; the index page
must stay fast on a large audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from django.db.models import Model
from django.urls import reverse
from django.utils import timezone
from django.utils.text import Truncator

from audit.models import AuditEvent
from hosts import approvals
from hosts.models import Host, HostKey, key_state_of
from hosts.visible import one_line
from sshcontrol.models import SshSession

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
COMMAND_TOOL = "ssh_execute"
# A command in the approvals band is one line of at most this many characters; its page shows it all.
SHORT_COMMAND_LENGTH = 80

Tone = Literal["neutral", "good", "warning", "bad"]


@dataclass(frozen=True)
class Card:
    """One number on the dashboard and the filtered list that shows its rows."""

    key: str
    label: str
    count: int
    url: str
    tone: Tone = "neutral"
    hint: str = ""


@dataclass(frozen=True)
class HostKeyAlert:
    """A host whose server key waits for an admin: ``pending`` (new) or ``changed`` (differs from trusted)."""

    host_name: str
    state: Literal["pending", "changed"]
    fingerprints: tuple[str, ...]
    host_url: str
    keys_url: str


@dataclass(frozen=True)
class PendingApproval:
    """A command held for an admin's decision, as the band at the top of the index lists it."""

    id: int
    client_name: str
    host_name: str
    command: str  # one line, shortened
    sudo: bool
    requested_at: datetime
    expires_at: datetime
    url: str
    # The viewing admin owns the requesting client, so may not decide it: another admin must.
    own: bool
    # For a batch of ssh_execute_many: every host the one approval covers (host_name is the first).
    batch_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChainStatus:
    """The audit hash chain as ``audit.chain.chain_state()`` reports it, reduced to what the page shows."""

    ok: bool | None  # None: the state could not be read
    summary: str
    checked_at: datetime | None = None
    broken_url: str = ""


@dataclass(frozen=True)
class Dashboard:
    """Everything the admin index shows above the app list."""

    now: datetime
    since: datetime
    cards: tuple[Card, ...]
    key_alerts: tuple[HostKeyAlert, ...]
    chain: ChainStatus | None = None
    # Whether the viewer sees the audit log's numbers (and so the "last 24 hours" line).
    shows_audit: bool = True
    card_by_key: dict[str, Card] = field(default_factory=dict, compare=False)

    @property
    def keys_changed(self) -> bool:
        """Whether any host presents a key that differs from its trusted one (the red band)."""
        return any(alert.state == "changed" for alert in self.key_alerts)


def _changelist(model_admin_url: str, params: Mapping[str, str]) -> str:
    return f"{reverse(model_admin_url)}?{urlencode(params)}" if params else reverse(model_admin_url)


def _since_param(since: datetime) -> str:
    # Whole seconds with an explicit offset: readable in the URL, and never a naive datetime.
    return since.astimezone(UTC).replace(microsecond=0).isoformat(sep=" ")


def audit_url(since: datetime, **filters: str) -> str:
    """The audit list filtered to rows started since ``since`` (and ``filters``, admin lookup syntax)."""
    return _changelist(
        "admin:audit_auditevent_changelist", {**filters, "started_at__gte": _since_param(since)}
    )


def host_key_alerts() -> list[HostKeyAlert]:
    """Hosts whose connections are refused for their keys, ``changed`` first.

    ``changed``: a pending key of a type that is already trusted (the server's key changed).
    ``pending``: no trusted key at all yet. A host with a trusted key connects with it, so
    the other key types a scan stored beside it are "also offered", not an alert.
    """
    rows = (
        HostKey.objects.filter(host__host_keys__state=HostKey.State.PENDING)
        .exclude(state=HostKey.State.REVOKED)
        .values_list("host_id", "host__name", "key_type", "state", "fingerprint")
        .distinct()
        .order_by("host__name", "key_type")
    )
    by_host: dict[int, tuple[str, list[tuple[str, str, str]]]] = {}
    for host_id, host_name, key_type, state, fingerprint in rows:
        by_host.setdefault(host_id, (host_name, []))[1].append((key_type, state, fingerprint))
    alerts: list[HostKeyAlert] = []
    for host_id, (host_name, keys) in by_host.items():
        state = key_state_of((key_state, key_type) for key_type, key_state, _ in keys)
        if state not in ("changed", "pending"):
            continue
        trusted_types = {kt for kt, key_state, _ in keys if key_state == HostKey.State.TRUSTED}
        # A changed host lists only the keys that replace a trusted one: those are its alarm.
        pending = [
            fp
            for kt, key_state, fp in keys
            if key_state == HostKey.State.PENDING and (state == "pending" or kt in trusted_types)
        ]
        alerts.append(
            HostKeyAlert(
                host_name=host_name,
                state="changed" if state == "changed" else "pending",
                fingerprints=tuple(pending),
                host_url=reverse("admin:hosts_host_change", args=[host_id]),
                keys_url=_changelist(
                    "admin:hosts_hostkey_changelist",
                    {"host__id__exact": str(host_id), "state__exact": HostKey.State.PENDING},
                ),
            )
        )
    alerts.sort(key=lambda alert: (alert.state != "changed", alert.host_name))
    return alerts


def pending_approvals(username: str) -> list[PendingApproval]:
    """Undecided requests, oldest first, marked ``own`` where ``username`` may not decide them.

    ``approvals.pending`` expires overdue requests first, so nothing listed has run out.
    """
    return [
        PendingApproval(
            id=request.pk,
            client_name=request.client.name,
            host_name=request.host.name,
            command=Truncator(one_line(request.command)).chars(SHORT_COMMAND_LENGTH),
            sudo=request.sudo,
            requested_at=request.requested_at,
            expires_at=request.expires_at,
            url=reverse("admin:hosts_approvalrequest_change", args=[request.pk]),
            own=bool(approvals.refusal(request, username)),
            batch_hosts=tuple(request.covered_hosts) if request.batch_id else (),
        )
        for request in approvals.pending()
    ]


def chain_status(loader: Callable[[], Any] | None = None) -> ChainStatus | None:
    """The audit chain's state, or None when this installation has no hash chain (``audit.chain``).

    ``loader`` stands in for ``audit.chain.chain_state`` in tests. Its result is read by
    attribute (ok, checked, first_broken_id, checked_at, problem), so a failure to read it
    shows as "unknown" on the page instead of breaking the admin index.
    """
    if loader is None:
        try:
            from audit import chain
        except ImportError:
            return None
        loader = chain.chain_state
    try:
        state = loader()
        ok = bool(state.ok)
        checked = int(state.checked)
    except Exception:
        log.exception("reading the audit chain state failed")
        return ChainStatus(ok=None, summary="could not be read; see the server log")
    checked_at = getattr(state, "checked_at", None)
    if ok:
        rows = "1 row" if checked == 1 else f"{checked} rows"
        return ChainStatus(ok=True, summary=f"intact, {rows} verified", checked_at=checked_at)
    broken_id = getattr(state, "first_broken_id", None)
    problem = str(getattr(state, "problem", "") or "a link does not verify")
    return ChainStatus(
        ok=False,
        summary=f"BROKEN after {checked} good rows: {problem}",
        checked_at=checked_at,
        broken_url=reverse("admin:audit_auditevent_change", args=[broken_id]) if broken_id else "",
    )


def _key_hint(hosts: int, changed: int) -> str:
    if not hosts:
        return "every host with a key connects"
    return f"{changed} with a CHANGED key" if changed else "waiting for a trusted key"


def _everything(model: type[Model]) -> bool:
    return True


def build(
    now: datetime | None = None,
    chain_loader: Callable[[], Any] | None = None,
    may_view: Callable[[type[Model]], bool] = _everything,
) -> Dashboard:
    """Compute the dashboard as of ``now`` (default: the current time).

    ``may_view(model)`` says whether the viewing admin may see rows of ``model``; each part
    of the dashboard is computed and shown only when it may (``may_view_model`` for a user).
    """
    now = now or timezone.now()
    since = now - WINDOW
    cards: list[Card] = []
    show_audit = may_view(AuditEvent)
    if show_audit:
        recent = AuditEvent.objects.filter(started_at__gte=since)
        commands = recent.filter(tool=COMMAND_TOOL).count()
        failures = recent.filter(status=AuditEvent.Status.ERROR).count()
        timeouts = recent.filter(status=AuditEvent.Status.TIMEOUT).count()
        cards += [
            Card(
                key="commands",
                label="Commands, last 24 h",
                count=commands,
                url=audit_url(since, tool__exact=COMMAND_TOOL),
            ),
            Card(
                key="failures",
                label="Failures, last 24 h",
                count=failures,
                url=audit_url(since, status__exact=AuditEvent.Status.ERROR),
                tone="bad" if failures else "good",
                hint="calls that ended in an error",
            ),
            Card(
                key="timeouts",
                label="Timeouts, last 24 h",
                count=timeouts,
                url=audit_url(since, status__exact=AuditEvent.Status.TIMEOUT),
                tone="warning" if timeouts else "good",
            ),
        ]
    alerts: list[HostKeyAlert] = []
    # Host names and fingerprints: both models' rows.
    if may_view(HostKey) and may_view(Host):
        alerts = host_key_alerts()
        changed = sum(1 for alert in alerts if alert.state == "changed")
        key_tone: Tone = "bad" if changed else "warning" if alerts else "good"
        cards.append(
            Card(
                key="host_keys",
                label="Hosts refused for their key",
                count=len(alerts),
                url=_changelist("admin:hosts_host_changelist", {"key_state": "refused"}),
                tone=key_tone,
                hint=_key_hint(len(alerts), changed),
            )
        )
    if may_view(SshSession):
        open_sessions = SshSession.objects.filter(state=SshSession.State.CONNECTED).count()
        cards.append(
            Card(
                key="sessions",
                label="Open sessions",
                count=open_sessions,
                url=_changelist(
                    "admin:sshcontrol_sshsession_changelist", {"state__exact": SshSession.State.CONNECTED}
                ),
            )
        )
    return Dashboard(
        now=now,
        since=since,
        cards=tuple(cards),
        key_alerts=tuple(alerts),
        chain=chain_status(chain_loader) if show_audit else None,
        card_by_key={card.key: card for card in cards},
        shows_audit=show_audit,
    )
