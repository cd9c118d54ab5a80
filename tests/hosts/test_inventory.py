from __future__ import annotations

import pytest

from hosts import hostkeys
from hosts.inventory import HostDisabled, HostNotFound, get_enabled_host, list_hosts
from hosts.models import Credential, Host, HostKey

pytestmark = pytest.mark.django_db


def _host(name: str, **fields: object) -> Host:
    credential = Credential(name=f"{name}-cred")
    credential.store_password("pw")
    credential.save()
    return Host.objects.create(
        name=name, address=f"{name}.example", username="ops", credential=credential, **fields
    )


def test_it_finds_an_enabled_host_with_its_credential() -> None:
    _host("web1")
    host = get_enabled_host("web1")
    assert host.credential is not None
    assert host.credential.name == "web1-cred"


def test_it_says_which_host_is_missing_and_how_to_find_one() -> None:
    with pytest.raises(HostNotFound) as excinfo:
        get_enabled_host("nope")
    assert (
        str(excinfo.value) == "no host named 'nope' is registered; ssh_list_hosts shows the hosts you can use"
    )


def test_it_refuses_a_disabled_host() -> None:
    _host("old", enabled=False)
    with pytest.raises(HostDisabled, match="host 'old' is disabled by an administrator"):
        get_enabled_host("old")


def test_it_lists_enabled_hosts_by_tag_and_search() -> None:
    _host("web1", tags=["web", "prod"], description="Front end")
    _host("db1", tags=["db", "prod"])
    _host("web2", tags=["web"], enabled=False)
    assert [h.name for h in list_hosts()] == ["db1", "web1"]
    assert [h.name for h in list_hosts(tag="web")] == ["web1"]
    assert [h.name for h in list_hosts(tag="we")] == []
    assert [h.name for h in list_hosts(search="FRONT")] == ["web1"]
    assert [h.name for h in list_hosts(search="prod")] == ["db1", "web1"]
    assert [h.name for h in list_hosts(tag="prod", search="db1.example")] == ["db1"]


def test_it_records_a_seen_key_as_pending_and_keeps_its_state() -> None:
    host = _host("web1")
    key = hostkeys.record_seen(host, "ssh-ed25519", "AAAA", "SHA256:abc")
    assert key.state == HostKey.State.PENDING
    hostkeys.revoke(host, "SHA256:abc", "alice")
    again = hostkeys.record_seen(host, "ssh-ed25519", "AAAA", "SHA256:abc", trusted=True)
    assert again.pk == key.pk
    assert again.state == HostKey.State.REVOKED
    assert HostKey.objects.count() == 1


def test_it_trusts_on_first_use() -> None:
    host = _host("web1")
    key = hostkeys.record_seen(host, "ssh-ed25519", "AAAA", "SHA256:abc", trusted=True)
    assert key.state == HostKey.State.TRUSTED
    assert key.approved_by == "trust-on-first-use"
    assert key.approved_at is not None
    assert hostkeys.trusted_keys(host) == (("ssh-ed25519", "AAAA"),)


def test_it_trusts_and_revokes_with_who_and_when() -> None:
    host = _host("web1")
    hostkeys.record_seen(host, "ssh-rsa", "BBBB", "SHA256:rsa")
    assert hostkeys.trusted_keys(host) == ()
    key = hostkeys.trust(host, "SHA256:rsa", "alice")
    assert (key.state, key.approved_by) == (HostKey.State.TRUSTED, "alice")
    assert key.approved_at is not None
    assert hostkeys.trusted_keys(host) == (("ssh-rsa", "BBBB"),)
    assert hostkeys.revoke(host, "SHA256:rsa", "bob").state == HostKey.State.REVOKED
    assert hostkeys.trusted_keys(host) == ()
    with pytest.raises(hostkeys.HostKeyNotFound):
        hostkeys.trust(host, "SHA256:unknown", "alice")


def test_it_refuses_to_approve_a_changed_key_without_confirmation() -> None:
    host = _host("web1")
    old = hostkeys.record_seen(host, "ssh-ed25519", "AAAA", "SHA256:old", trusted=True)
    hostkeys.record_seen(host, "ssh-ed25519", "BBBB", "SHA256:new")
    hostkeys.record_seen(host, "ssh-rsa", "CCCC", "SHA256:rsa")
    assert host.key_state == "changed"

    with pytest.raises(hostkeys.KeyChangeNotConfirmed, match="would replace the trusted ssh-ed25519 key"):
        hostkeys.approve(host, "SHA256:new", "alice")
    assert hostkeys.trusted_keys(host) == (("ssh-ed25519", "AAAA"),)
    assert hostkeys.replaced_by(HostKey.objects.get(fingerprint="SHA256:new")) == old

    # Another key type is no change.
    assert hostkeys.approve(host, "SHA256:rsa", "alice").replaced == ()

    approval = hostkeys.approve(host, "SHA256:new", "bob", replace=True)
    assert [k.fingerprint for k in approval.replaced] == ["SHA256:old"]
    old.refresh_from_db()
    assert (old.state, old.approved_by) == (HostKey.State.REVOKED, "bob")
    assert hostkeys.trusted_keys(host) == (("ssh-ed25519", "BBBB"), ("ssh-rsa", "CCCC"))
    assert host.key_state == "trusted"
    assert hostkeys.host_key_states() == {host.pk: "trusted"}
