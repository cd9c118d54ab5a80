"""Jump hosts in the inventory: the chain, loops refused, the admin form, list and change page."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import ProtectedError
from django.urls import reverse

from hosts.importers import ParsedSource
from hosts.importers.ansible import parse_inventory
from hosts.importers.apply import ImportOptions, ImportReport, apply_import
from hosts.importers.jumps import Hop, parse_proxy_jump
from hosts.importers.ssh_config import parse_ssh_config
from hosts.models import Credential, Host, JumpLoop

pytestmark = pytest.mark.django_db


def _host(name: str, jump: Host | None = None) -> Host:
    credential, _ = Credential.objects.get_or_create(name="shared", defaults={"kind": "password"})
    return Host.objects.create(
        name=name, address=f"{name}.example", username="ops", credential=credential, jump_host=jump
    )


def test_it_gives_the_chain_outermost_first() -> None:
    edge = _host("edge")
    inner = _host("inner", jump=edge)
    target = _host("target", jump=inner)
    assert [h.name for h in target.jump_chain()] == ["edge", "inner"]
    assert [h.name for h in inner.jump_chain()] == ["edge"]
    assert edge.jump_chain() == []


def test_it_refuses_a_host_as_its_own_jump_host() -> None:
    host = _host("solo")
    host.jump_host = host
    with pytest.raises(ValidationError) as excinfo:
        host.full_clean()
    assert excinfo.value.message_dict == {"jump_host": ["host 'solo' cannot be its own jump host"]}


def test_it_refuses_a_chain_that_comes_back_to_itself() -> None:
    a = _host("a")
    b = _host("b", jump=a)
    c = _host("c", jump=b)
    a.jump_host = c
    with pytest.raises(ValidationError) as excinfo:
        a.full_clean()
    assert excinfo.value.message_dict == {"jump_host": ["the jump hosts make a loop: a -> c -> b -> a"]}
    # A loop already stored (written around clean()) is still never followed for ever.
    Host.objects.filter(pk=a.pk).update(jump_host=c)
    with pytest.raises(JumpLoop, match="loop"):
        Host.objects.get(pk=c.pk).jump_chain()


def test_it_reports_a_jump_host_that_does_not_exist_as_a_field_error() -> None:
    host = _host("solo")
    host.jump_host_id = host.pk + 1000
    with pytest.raises(ValidationError) as excinfo:
        host.full_clean()
    assert list(excinfo.value.message_dict) == ["jump_host"]


def test_it_does_not_delete_a_jump_host_that_hosts_still_use() -> None:
    edge = _host("edge")
    _host("target", jump=edge)
    with pytest.raises(ProtectedError):
        edge.delete()


def _form_data(host: Host, **changes: str) -> dict[str, str]:
    data = {
        "name": host.name,
        "address": host.address,
        "port": str(host.port),
        "username": host.username,
        "credential": str(host.credential_id),
        "description": "",
        "tags": "",
        "enabled": "on",
        "jump_host": str(host.jump_host_id or ""),
        "host_keys-TOTAL_FORMS": "0",
        "host_keys-INITIAL_FORMS": "0",
        "host_keys-MIN_NUM_FORMS": "0",
        "host_keys-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return data


def test_it_edits_the_jump_host_in_the_admin_and_shows_the_chain(admin_client) -> None:
    edge = _host("edge")
    inner = _host("inner", jump=edge)
    target = _host("target")
    url = reverse("admin:hosts_host_change", args=[target.pk])
    response = admin_client.post(url, _form_data(target, jump_host=str(inner.pk)))
    assert response.status_code == 302, response.content.decode()[:2000]
    target.refresh_from_db()
    assert target.jump_host == inner

    page = admin_client.get(url).content.decode()
    assert "edge -&gt; inner -&gt; target" in page
    listing = admin_client.get(reverse("admin:hosts_host_changelist")).content.decode()
    assert "ops@target.example via edge -&gt; inner" in listing
    assert "ops@edge.example<" in listing  # a direct host says nothing more


def test_it_refuses_a_loop_on_the_admin_form(admin_client) -> None:
    edge = _host("edge")
    inner = _host("inner", jump=edge)
    url = reverse("admin:hosts_host_change", args=[edge.pk])
    response = admin_client.post(url, _form_data(edge, jump_host=str(inner.pk)))
    assert response.status_code == 200
    assert "the jump hosts make a loop: edge -&gt; inner -&gt; edge" in response.content.decode()
    edge.refresh_from_db()
    assert edge.jump_host is None


# -- the hosts command ----------------------------------------------------------------------------


def hosts_command(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    with mock.patch.object(sys, "stdin", io.StringIO(stdin)):
        call_command("hosts", *args, stdout=out)
    return out.getvalue()


def test_it_adds_a_host_behind_a_jump_host_from_the_command_line() -> None:
    _host("edge")
    hosts_command("add", "inner", "--address", "10.9.0.2", "--username", "ops", "--password-stdin",
                  "--jump", "edge", stdin="pw\n")  # fmt: skip
    out = hosts_command("add", "db", "--address", "10.9.0.3", "--username", "ops", "--password-stdin",
                        "--jump", "inner", stdin="pw\n")  # fmt: skip
    assert "Connections go through edge -> inner." in out
    assert 'Next: run "sshcontrol hosts scan db"' in out  # through its jump hosts (tests/ssh/jump)
    assert Host.objects.get(name="db").jump_host == Host.objects.get(name="inner")
    assert "10.9.0.3:22 via inner" in hosts_command("list")
    listed = {h["name"]: h["jump_host"] for h in json.loads(hosts_command("list", "--json"))}
    assert listed == {"db": "inner", "edge": None, "inner": "edge"}

    with pytest.raises(CommandError, match="no host named 'nowhere'"):
        hosts_command("add", "x", "--address", "10.9.0.4", "--username", "ops", "--password-stdin",
                      "--jump", "nowhere", stdin="pw\n")  # fmt: skip
    assert not Host.objects.filter(name="x").exists()
    with pytest.raises(CommandError, match="is the jump host of db; give those another jump host"):
        hosts_command("remove", "inner", "--yes")


# -- import_hosts -----------------------------------------------------------------------------------

CONFIG = """\
Host t
    HostName 10.8.0.30
    User ops
    ProxyJump a,b

Host b
    HostName 10.8.0.20
    User ops

Host a
    HostName bastion.example.com
    User ops
    Port 2200

Host u
    HostName 10.8.0.31
    User ops
    ProxyJump ops@bastion.example.com:2200

Host lost
    HostName 10.8.0.32
    User ops
    ProxyJump nowhere.example.com
"""


def _import(text: str, parse: Callable[[str, str], ParsedSource], **options: Any) -> ImportReport:
    return apply_import(parse(text, "config"), ImportOptions(**options))


def _notes(report: ImportReport, name: str) -> str:
    return " | ".join(next(row for row in report.rows if row.name == name).notes)


def test_it_links_an_imported_proxy_jump_chain() -> None:
    report = _import(CONFIG, parse_ssh_config)
    hosts = {h.name: h for h in Host.objects.select_related("jump_host")}
    # ProxyJump a,b for t: t -> b -> a, although a and b come later in the file.
    assert [h.name for h in hosts["t"].jump_chain()] == ["a", "b"]
    assert hosts["b"].jump_host == hosts["a"] and hosts["a"].jump_host is None
    assert "connects through a -> b" in _notes(report, "t")
    assert "jump host b now goes through a" in _notes(report, "t")
    # Matched by address (and port) when no host has the hop's name.
    assert hosts["u"].jump_host == hosts["a"]
    assert hosts["lost"].jump_host is None
    assert "jump host nowhere.example.com is not a registered host: not linked" in _notes(report, "lost")


def test_it_links_hops_to_registered_hosts_and_never_replaces_a_hop_s_jump_host() -> None:
    _host("edge")
    other = _host("other")
    inner = _host("inner", jump=other)
    report = _import("Host t\n  HostName 10.8.0.30\n  User ops\n  ProxyJump edge,inner\n", parse_ssh_config)
    target = Host.objects.get(name="t")
    assert target.jump_host == inner
    inner.refresh_from_db()
    assert inner.jump_host == other  # left as it was
    assert "jump host inner already goes through other; left as it is, not through edge" in _notes(
        report, "t"
    )


def test_it_reports_a_proxy_jump_loop_and_links_nothing() -> None:
    _host("a")
    _host("b", jump=Host.objects.get(name="a"))
    report = _import(
        "Host a\n  HostName a.example\n  User ops\n  ProxyJump b\n", parse_ssh_config, update=True
    )
    assert Host.objects.get(name="a").jump_host is None
    assert "the jump hosts make a loop: a -> b -> a: not linked" in _notes(report, "a")


def test_it_updates_the_jump_host_of_an_existing_host_and_writes_nothing_in_a_dry_run() -> None:
    _import(
        "Host j\n  HostName 10.8.0.1\n  User ops\nHost t\n  HostName 10.8.0.2\n  User ops\n", parse_ssh_config
    )
    text = "Host j\n  HostName 10.8.0.1\n  User ops\nHost t\n  HostName 10.8.0.2\n  User ops\n  ProxyJump j\n"
    dry = _import(text, parse_ssh_config, update=True, dry_run=True)
    assert Host.objects.get(name="t").jump_host is None
    report = _import(text, parse_ssh_config, update=True)
    row = next(r for r in report.rows if r.name == "t")
    assert (row.outcome, row.detail) == ("updated", "proxy_jump  -> j; jump host none -> j")
    assert [(r.outcome, r.detail) for r in dry.rows] == [(r.outcome, r.detail) for r in report.rows]
    assert Host.objects.get(name="t").jump_host == Host.objects.get(name="j")


@pytest.mark.parametrize(
    "args",
    [
        "ansible_ssh_common_args='-J bastion'",
        "ansible_ssh_extra_args='-o ProxyJump=bastion'",
        "ansible_ssh_common_args='-o \"ProxyJump bastion\"'",
    ],
)
def test_it_links_the_jump_host_of_an_ansible_inventory(args: str) -> None:
    inventory = (
        "bastion ansible_host=203.0.113.5 ansible_user=ops\n"
        f"app ansible_host=10.1.0.5 ansible_user=ops {args}\n"
    )
    _import(inventory, parse_inventory)
    assert Host.objects.get(name="app").jump_host == Host.objects.get(name="bastion")


def test_it_parses_proxy_jump_values() -> None:
    assert parse_proxy_jump("none") == []
    assert parse_proxy_jump("a, ops@b:2200,ssh://root@[2001:db8::1]:22") == [
        Hop("a"),
        Hop("b", user="ops", port=2200),
        Hop("2001:db8::1", user="root", port=22),
    ]
    with pytest.raises(ValueError, match="no valid port"):
        parse_proxy_jump("a:ssh")
