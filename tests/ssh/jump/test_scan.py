"""Scanning the host key of a host reachable only through jump hosts: `hosts scan` and the admin action.

t2 sits behind j1 then j2 in network namespaces (tests/netns.py): a scan that did not go
through both could not reach it at all. Each hop is verified as for a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from hosts.models import Host, HostKey
from sshlib.connect import fingerprint
from tests.netns import JumpNet
from tests.polling import wait_until
from tests.server_hosts import register


@pytest.fixture
def chain(transactional_db: None, jump_net: JumpNet) -> Iterator[tuple[Host, Host, Host]]:
    j1 = register(jump_net.servers["j1"], "j1")
    j2 = register(jump_net.servers["j2"], "j2", jump=j1)
    t2 = register(jump_net.servers["t2"], "t2", jump=j2)
    t2.host_keys.all().delete()  # nothing known about the target yet: what a scan is for
    yield j1, j2, t2
    j1_server = jump_net.servers["j1"]
    wait_until(lambda: not j1_server.user_processes("sshd"), message="the scan's jump connections to close")


def scan(name: str) -> str:
    out = StringIO()
    call_command("hosts", "scan", name, stdout=out)
    return out.getvalue()


def test_hosts_scan_reaches_a_host_through_two_jump_hosts(
    chain: tuple[Host, Host, Host], jump_net: JumpNet
) -> None:
    _j1, _j2, t2 = chain
    key = fingerprint(jump_net.servers["t2"].host_key())
    out = scan("t2")
    assert f"Host keys offered by {t2.address}:22 (through j1 -> j2):" in out
    assert f"ssh-ed25519  {key}  pending" in out
    assert f"sshcontrol hosts trust t2 {key}" in out
    assert HostKey.objects.get(host=t2).fingerprint == key


def test_a_scan_refuses_a_hop_with_an_unknown_key_and_stores_it_for_that_hop(
    chain: tuple[Host, Host, Host], jump_net: JumpNet
) -> None:
    _j1, j2, t2 = chain
    j2.host_keys.all().delete()
    key = fingerprint(jump_net.servers["j2"].host_key())
    with pytest.raises(CommandError) as excinfo:
        scan("t2")
    message = str(excinfo.value)
    assert "jump host 'j2': host key ssh-ed25519" in message
    assert f"sshcontrol hosts trust j2 {key}" in message
    assert HostKey.objects.get(host=j2, state=HostKey.State.PENDING).fingerprint == key
    assert not HostKey.objects.filter(host=t2).exists()  # nothing scanned behind a refused hop


def test_a_scan_refuses_a_hop_with_a_changed_key(chain: tuple[Host, Host, Host], jump_net: JumpNet) -> None:
    j1, _j2, t2 = chain
    jump_net.servers["j1"].regenerate_host_keys()
    new_key = fingerprint(jump_net.servers["j1"].host_key())
    with pytest.raises(CommandError, match="jump host 'j1': host key changed"):
        scan("t2")
    assert HostKey.objects.get(host=j1, state=HostKey.State.PENDING).fingerprint == new_key
    assert not HostKey.objects.filter(host=t2).exists()


def test_a_scan_through_a_disabled_jump_host_is_refused_before_connecting(
    chain: tuple[Host, Host, Host], jump_net: JumpNet
) -> None:
    j1, _j2, _t2 = chain
    Host.objects.filter(pk=j1.pk).update(enabled=False)
    with pytest.raises(CommandError, match="jump host 'j1' of host 't2' is disabled by an administrator"):
        scan("t2")
    assert not jump_net.servers["j1"].user_processes("sshd")


def test_the_admin_scans_a_host_behind_jump_hosts(
    chain: tuple[Host, Host, Host], jump_net: JumpNet, admin_client: Client
) -> None:
    _j1, _j2, t2 = chain
    response = admin_client.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "scan_host_keys_action", "_selected_action": [t2.pk]},
        follow=True,
    )
    page = response.content.decode()
    key = fingerprint(jump_net.servers["t2"].host_key())
    assert key in page and "Review and approve the 1 pending key(s)" in page
    assert "not scanned" not in page
    assert HostKey.objects.get(host=t2, state=HostKey.State.PENDING).fingerprint == key
