"""Jump hosts in the inventory: the chain, loops refused, the admin form, list and change page."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db.models import ProtectedError
from django.urls import reverse

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
