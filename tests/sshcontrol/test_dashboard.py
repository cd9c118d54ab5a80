"""The admin index dashboard: the numbers, the links behind them, the host key band, the chain state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from audit import writer
from audit.models import AuditEvent
from hosts.models import Host, HostKey
from sshcontrol import dashboard
from sshcontrol.models import SshSession

pytestmark = pytest.mark.django_db


def event(tool: str = "ssh_execute", status: str = "ok", age: timedelta = timedelta(0)) -> int:
    event_id = writer.begin(tool=tool, actor="claude", transport="stdio", command="uptime")
    writer.complete(event_id, status=status)
    if age:
        # Tests only: backdating a row is exactly what the application code may never do.
        AuditEvent.objects.filter(pk=event_id).update(started_at=timezone.now() - age)
    return event_id


def host(name: str, *keys: tuple[str, str, str]) -> Host:
    row = Host.objects.create(name=name, address="192.0.2.1", username="deploy")
    for key_type, fingerprint, state in keys:
        HostKey.objects.create(
            host=row, key_type=key_type, public_key="AAAA", fingerprint=fingerprint, state=state
        )
    return row


def build() -> dashboard.Dashboard:
    return dashboard.build(chain_loader=lambda: _State(ok=True, checked=0))


def test_it_counts_commands_failures_and_timeouts_of_the_last_day():
    event()
    event()
    event(tool="ssh_upload_file")
    event(status="error")
    event(tool="ssh_list_files", status="error")
    event(status="timeout")
    event(status="error", age=timedelta(hours=25))
    event(status="timeout", age=timedelta(days=3))
    cards = build().card_by_key
    assert cards["commands"].count == 4  # ssh_execute rows only, the old ones left out
    assert cards["failures"].count == 2
    assert cards["timeouts"].count == 1
    assert (cards["failures"].tone, cards["timeouts"].tone) == ("bad", "warning")


def test_it_is_calm_when_nothing_needs_attention():
    board = build()
    assert [card.count for card in board.cards] == [0, 0, 0, 0, 0]
    assert board.card_by_key["failures"].tone == "good"
    assert board.key_alerts == () and not board.keys_changed


def test_it_links_each_card_to_the_list_of_exactly_its_rows(admin_client):
    event(status="error")
    event(status="error", age=timedelta(hours=30))
    event(status="timeout")
    event(tool="ssh_list_files")
    for key, expected in (("failures", 1), ("timeouts", 1), ("commands", 2)):
        url = build().card_by_key[key].url
        query = parse_qs(urlsplit(url).query)
        assert "started_at__gte" in query
        response = admin_client.get(url)
        assert response.status_code == 200, key  # an unknown lookup would redirect with ?e=1
        assert response.context["cl"].result_count == expected, key


def test_it_counts_pending_and_changed_host_keys_and_links_them(admin_client):
    host("calm", ("ssh-ed25519", "SHA256:calm", HostKey.State.TRUSTED))
    host(
        "fresh", ("ssh-ed25519", "SHA256:new1", HostKey.State.PENDING), ("ssh-rsa", "SHA256:new2", "pending")
    )
    host(
        "moved",
        ("ssh-ed25519", "SHA256:old", HostKey.State.TRUSTED),
        ("ssh-ed25519", "SHA256:evil", HostKey.State.PENDING),
    )
    host("gone", ("ssh-ed25519", "SHA256:bad", HostKey.State.REVOKED))
    board = build()
    assert [(a.host_name, a.state) for a in board.key_alerts] == [("moved", "changed"), ("fresh", "pending")]
    assert board.key_alerts[0].fingerprints == ("SHA256:evil",)
    assert board.key_alerts[1].fingerprints == ("SHA256:new1", "SHA256:new2")
    assert board.keys_changed
    card = board.card_by_key["host_keys"]
    assert (card.count, card.tone) == (2, "bad")  # hosts refused, not keys
    assert "1 with a CHANGED key" in card.hint
    response = admin_client.get(card.url)
    assert response.status_code == 200
    assert sorted(h.name for h in response.context["cl"].result_list) == ["fresh", "moved"]
    review = admin_client.get(board.key_alerts[0].keys_url)
    assert review.context["cl"].result_count == 1


def also_offered_host() -> Host:
    """What the README's steps leave: a scan stored three key types, the admin trusted one."""
    return host(
        "web1",
        ("ssh-ed25519", "SHA256:trusted", HostKey.State.TRUSTED),
        ("ssh-rsa", "SHA256:rsa", HostKey.State.PENDING),
        ("ecdsa-sha2-nistp256", "SHA256:ecdsa", HostKey.State.PENDING),
    )


def test_it_raises_no_alarm_for_key_types_also_offered_beside_a_trusted_key(admin_client):
    also_offered_host()
    board = build()
    assert board.key_alerts == () and not board.keys_changed
    card = board.card_by_key["host_keys"]
    assert (card.count, card.tone) == (0, "good")
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="host-key-warning"' not in body


def test_a_changed_key_beside_also_offered_types_alarms_for_the_changed_key_only():
    row = also_offered_host()
    HostKey.objects.create(
        host=row, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:evil", state="pending"
    )
    (alert,) = build().key_alerts
    assert (alert.host_name, alert.state, alert.fingerprints) == ("web1", "changed", ("SHA256:evil",))


def test_the_host_page_shows_other_offered_key_types_as_also_offered(admin_client):
    row = also_offered_host()
    body = admin_client.get(reverse("admin:hosts_host_change", args=[row.pk])).content.decode()
    assert body.count("also offered") == 2 and "pending approval" not in body
    keys = admin_client.get(reverse("admin:hosts_hostkey_changelist")).content.decode()
    assert keys.count("optional: the host connects with its trusted key") == 2


def test_it_counts_open_sessions_only(admin_client):
    for state in ("connected", "connected", "lost", "closed"):
        SshSession.objects.create(
            session_id=f"s-{state}-{SshSession.objects.count()}", host_name="x", state=state
        )
    card = build().card_by_key["sessions"]
    assert card.count == 2
    assert admin_client.get(card.url).context["cl"].result_count == 2


def test_the_index_shows_the_cards_and_a_red_band_for_a_changed_key(admin_client):
    event(status="timeout")
    host(
        "moved",
        ("ssh-ed25519", "SHA256:old", HostKey.State.TRUSTED),
        ("ssh-ed25519", "SHA256:evil", HostKey.State.PENDING),
    )
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="card-timeouts"' in body and "Timeouts, last 24 h" in body
    assert 'id="host-key-warning"' in body and "sc-changed" in body
    assert "SHA256:evil" in body and "key CHANGED" in body
    assert 'id="content-main"' in body and "recent-actions-module" in body  # the stock index is kept


def test_the_index_has_no_band_when_every_key_is_decided(admin_client):
    host("calm", ("ssh-ed25519", "SHA256:calm", HostKey.State.TRUSTED))
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="host-key-warning"' not in body
    assert 'id="dashboard"' in body


def test_the_index_shows_a_pending_band_in_orange(admin_client):
    host("fresh", ("ssh-ed25519", "SHA256:new1", HostKey.State.PENDING))
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "sc-pending" in body and "Host keys waiting for approval" in body


@dataclass
class _State:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    checked_at: datetime | None = None
    problem: str = ""


def test_it_shows_an_intact_chain():
    when = timezone.now()
    chain = dashboard.chain_status(lambda: _State(ok=True, checked=12, checked_at=when))
    assert chain == dashboard.ChainStatus(ok=True, summary="intact, 12 rows verified", checked_at=when)


def test_it_shows_a_broken_chain_with_a_link_to_the_first_broken_row():
    chain = dashboard.chain_status(
        lambda: _State(ok=False, checked=3, first_broken_id=4, problem="row id 4: hash check failed")
    )
    assert chain is not None and chain.ok is False
    assert chain.summary == "BROKEN after 3 good rows: row id 4: hash check failed"
    assert chain.broken_url == reverse("admin:audit_auditevent_change", args=[4])


def test_a_failing_chain_state_does_not_break_the_index():
    def broken() -> None:
        raise RuntimeError("database locked")

    chain = dashboard.chain_status(broken)
    assert chain is not None and chain.ok is None and "could not be read" in chain.summary


def test_the_index_shows_a_broken_chain_in_red(admin_client, monkeypatch):
    from audit import chain

    monkeypatch.setattr(chain, "chain_state", lambda: _State(ok=False, checked=0, first_broken_id=7))
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert 'sc-chain sc-bad"' in body and "BROKEN" in body
    assert reverse("admin:audit_auditevent_change", args=[7]) in body


def test_the_index_shows_the_real_chain_state(admin_client):
    from audit.chain import reset_chain_state

    reset_chain_state()  # another test's database may have left a position behind
    event()
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="audit-chain"' in body and "intact, 1 row verified" in body


def staff(client, username: str, *permissions: str):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password="x", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return client.get(reverse("admin:index")).content.decode()


def everything_on_the_index() -> None:
    event(status="timeout")
    host("fresh", ("ssh-ed25519", "SHA256:fresh-key", HostKey.State.PENDING))
    SshSession.objects.create(session_id="s-open", host_name="fresh", state="connected")


def test_a_staff_user_without_permissions_sees_nothing_of_the_dashboard(client):
    everything_on_the_index()
    body = staff(client, "nobody")
    for hidden in ('id="dashboard"', "card-", "fresh", "SHA256:", "Audit hash chain", "Last 24 hours"):
        assert hidden not in body, hidden
    assert 'id="content-main"' in body  # the stock index ("You don't have permission ...") is kept


def test_a_staff_user_sees_only_the_parts_of_the_models_it_may_view(client):
    everything_on_the_index()
    body = staff(client, "auditor", "view_auditevent")
    assert 'id="card-timeouts"' in body and 'id="audit-chain"' in body and "Last 24 hours" in body
    for hidden in ('id="card-host_keys"', 'id="card-sessions"', "host-key-warning", "SHA256:fresh-key"):
        assert hidden not in body, hidden

    client.logout()
    body = staff(client, "keykeeper", "view_hostkey", "view_host")
    assert 'id="card-host_keys"' in body and 'id="host-key-warning"' in body and "SHA256:fresh-key" in body
    for hidden in ('id="card-timeouts"', 'id="card-sessions"', 'id="audit-chain"', "Last 24 hours"):
        assert hidden not in body, hidden

    client.logout()
    body = staff(client, "sessions", "view_sshsession")
    assert 'id="card-sessions"' in body
    for hidden in ('id="card-timeouts"', 'id="card-host_keys"', "SHA256:", 'id="audit-chain"'):
        assert hidden not in body, hidden

    client.logout()
    # Fingerprints without the host's view permission are still the host's names: not shown.
    body = staff(client, "halfkeys", "view_hostkey")
    assert "SHA256:fresh-key" not in body and 'id="card-host_keys"' not in body
