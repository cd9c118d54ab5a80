from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hosts.management.commands.hosts import Command
from hosts.models import Credential, Host, HostKey

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Password-on-stdin"


def run(*args: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    call_command("hosts", *args, stdout=out)
    return out.getvalue()


def add_password_host(monkeypatch: pytest.MonkeyPatch, name: str = "web1", *extra: str) -> str:
    return run(
        "add", name, "--address", "10.0.0.5", "--username", "ops", "--password-stdin", *extra,
        stdin=PASSWORD + "\nsecond line\n", monkeypatch=monkeypatch,
    )  # fmt: skip


def test_it_adds_a_host_with_a_password_from_stdin(monkeypatch) -> None:
    out = add_password_host(
        monkeypatch, "web1", "--port", "2222", "--tag", "web", "--tag", "prod", "--tag", "web"
    )
    host = Host.objects.select_related("credential").get(name="web1")
    assert (host.address, host.port, host.username, host.tags) == ("10.0.0.5", 2222, "ops", ["web", "prod"])
    assert host.credential is not None
    assert host.credential.name == "web1"
    assert host.credential.kind == Credential.Kind.PASSWORD
    assert host.credential.secret() == PASSWORD
    assert host.credential.secret_encrypted.startswith("sshc:v1:")
    assert PASSWORD not in out
    assert 'run "sshcontrol hosts scan web1" then "sshcontrol hosts trust web1 SHA256:..."' in out


def test_it_adds_a_host_with_an_encrypted_key_file(monkeypatch, keygen) -> None:
    path = keygen("ecdsa", passphrase="key passphrase")
    out = run(
        "add", "db1", "--address", "db.example", "--username", "root", "--key-file", str(path),
        "--passphrase-stdin", "--credential-name", "db-key", "--trust-on-first-use",
        stdin="key passphrase\n", monkeypatch=monkeypatch,
    )  # fmt: skip
    host = Host.objects.select_related("credential").get(name="db1")
    credential = host.credential
    assert credential is not None
    assert credential.name == "db-key"
    assert credential.kind == Credential.Kind.PRIVATE_KEY
    assert credential.secret() == path.read_text()
    assert credential.passphrase() == "key passphrase"
    assert credential.public_key.split()[:2] == path.with_suffix(".pub").read_text().split()[:2]
    assert credential.fingerprint.startswith("SHA256:")
    assert credential.fingerprint in out
    assert host.trust_on_first_use
    assert "trust-on-first-use" in out
    assert "BEGIN" not in out and "key passphrase" not in out


def test_it_asks_for_the_passphrase_of_an_encrypted_key(monkeypatch, keygen) -> None:
    path = keygen("ed25519", passphrase="key passphrase")
    with pytest.raises(CommandError, match="give its passphrase with --passphrase-stdin"):
        run("add", "db1", "--address", "db", "--username", "root", "--key-file", str(path))
    with pytest.raises(CommandError, match="wrong passphrase"):
        run(
            "add", "db1", "--address", "db", "--username", "root", "--key-file", str(path),
            "--passphrase-stdin", stdin="nope\n", monkeypatch=monkeypatch,
        )  # fmt: skip
    assert not Host.objects.exists()
    assert not Credential.objects.exists()


def test_it_refuses_duplicates_bad_ports_and_missing_secrets(monkeypatch, tmp_path) -> None:
    add_password_host(monkeypatch, "web1")
    with pytest.raises(CommandError, match="a host named 'web1' already exists"):
        add_password_host(monkeypatch, "web1")
    with pytest.raises(CommandError, match="a credential named 'web1' already exists"):
        add_password_host(monkeypatch, "web2", "--credential-name", "web1")
    with pytest.raises(CommandError, match="port must be a number from 1 to 65535"):
        add_password_host(monkeypatch, "web3", "--port", "70000")
    with pytest.raises(CommandError, match="stdin is empty"):
        run(
            "add", "web4", "--address", "a", "--username", "u", "--password-stdin", stdin="\n",
            monkeypatch=monkeypatch,
        )  # fmt: skip
    with pytest.raises(
        CommandError, match="one of the arguments --password-stdin --key-file --use-credential"
    ):
        run("add", "web5", "--address", "a", "--username", "u")
    with pytest.raises(CommandError, match="cannot read key file"):
        run("add", "web6", "--address", "a", "--username", "u", "--key-file", str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="name"):
        add_password_host(monkeypatch, "not a slug")
    assert list(Host.objects.values_list("name", flat=True)) == ["web1"]
    assert list(Credential.objects.values_list("name", flat=True)) == ["web1"]


def test_it_has_no_option_that_takes_a_secret_on_argv() -> None:
    parser = Command().create_parser("manage.py", "hosts")
    subparsers = next(a for a in parser._actions if a.dest == "action")
    add = subparsers.choices["add"]  # type: ignore[index]
    valued = {a.dest for a in add._actions if a.option_strings and a.nargs != 0}
    django_options = {
        "verbosity",
        "settings",
        "pythonpath",
        "traceback",
        "no_color",
        "force_color",
        "skip_checks",
    }
    assert valued - django_options == {
        "address", "port", "username", "key_file", "use_credential", "description", "tags", "credential_name",
        "jump",
    }  # fmt: skip
    assert not any(word in dest for dest in valued for word in ("password", "passphrase", "secret"))
    for attempt in (["--password", PASSWORD], [f"--password={PASSWORD}"], ["--pass", PASSWORD]):
        with pytest.raises(CommandError, match="unrecognized arguments") as excinfo:
            run("add", "web1", "--address", "a", "--username", "u", "--key-file", "k", *attempt)
        assert PASSWORD not in str(excinfo.value)


def test_it_reuses_an_existing_credential(monkeypatch) -> None:
    add_password_host(monkeypatch, "web1")
    run("add", "web2", "--address", "10.0.0.6", "--username", "ops", "--use-credential", "web1")
    assert Host.objects.get(name="web2").credential == Host.objects.get(name="web1").credential


def test_it_lists_hosts_as_json_without_secrets(monkeypatch) -> None:
    add_password_host(monkeypatch, "web1", "--tag", "web")
    host = Host.objects.get(name="web1")
    HostKey.objects.create(host=host, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:abc")
    out = run("list", "--json")
    data = json.loads(out)
    assert data[0]["name"] == "web1"
    assert data[0]["tags"] == ["web"]
    assert data[0]["key_state"] == "pending"
    assert data[0]["credential"] == {
        "name": "web1",
        "kind": "password",
        "has_secret": True,
        "fingerprint": None,
    }
    assert data[0]["host_keys"][0]["fingerprint"] == "SHA256:abc"
    assert data[0]["host_keys"][0]["state"] == "pending"
    assert PASSWORD not in out and "sshc:v1:" not in out


def test_it_lists_hosts_as_a_table(monkeypatch) -> None:
    assert "No hosts registered" in run("list")
    add_password_host(monkeypatch, "web1", "--tag", "web")
    out = run("list")
    assert "NAME" in out and "10.0.0.5:22" in out and "unknown" in out and "password" in out
    assert PASSWORD not in out


def test_it_scans_and_trusts_the_servers_host_keys(monkeypatch, sshd) -> None:
    from sshlib.connect import fingerprint

    run(
        "add", "real", "--address", sshd.address, "--port", str(sshd.port), "--username", sshd.user,
        "--password-stdin", stdin=sshd.password + "\n", monkeypatch=monkeypatch,
    )  # fmt: skip
    out = run("scan", "real")
    host = Host.objects.get(name="real")
    keys = {k.fingerprint: k for k in host.host_keys.all()}
    expected = {fingerprint(sshd.host_key(kind)) for kind in ("ed25519", "ecdsa", "rsa")}
    assert set(keys) == expected
    assert {k.state for k in keys.values()} == {HostKey.State.PENDING}
    for fp in expected:
        assert f"sshcontrol hosts trust real {fp}" in out

    ed25519 = fingerprint(sshd.host_key("ed25519"))
    out = run("trust", "real", ed25519, "--by", "alice")
    assert "Trusted" in out
    key = HostKey.objects.get(host=host, fingerprint=ed25519)
    assert (key.state, key.approved_by) == (HostKey.State.TRUSTED, "alice")
    assert key.approved_at is not None

    # A second scan keeps the decision.
    run("scan", "real")
    assert HostKey.objects.get(host=host, fingerprint=ed25519).state == HostKey.State.TRUSTED
    assert host.host_keys.count() == 3


def test_it_scans_without_logging_the_key_types_a_server_lacks(
    monkeypatch, sshd, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from hosts.hostkeys import scan

    # The suite's sshd has no nistp384/521 keys: those handshakes end in IncompatiblePeer,
    # which paramiko logged at ERROR with a traceback before the scan moved on.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sshcontrol")
    run(
        "add", "real", "--address", sshd.address, "--port", str(sshd.port), "--username", sshd.user,
        "--password-stdin", stdin=sshd.password + "\n", monkeypatch=monkeypatch,
    )  # fmt: skip
    run("scan", "real")
    assert scan(Host.objects.get(name="real")).error == ""  # the admin's Scan action
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
    refused = [r.getMessage() for r in caplog.records if "offers no" in r.getMessage()]
    assert refused and all("\n" not in line for line in refused)
    assert "Traceback" not in capfd.readouterr().err


def test_it_reports_an_unreachable_server(monkeypatch) -> None:
    from tests.sshd import free_port

    add_password_host(monkeypatch, "gone")
    Host.objects.filter(name="gone").update(address="127.0.0.1", port=free_port())
    with pytest.raises(CommandError, match="cannot scan"):
        run("scan", "gone")


def test_it_trusts_and_revokes_by_fingerprint(monkeypatch) -> None:
    add_password_host(monkeypatch, "web1")
    host = Host.objects.get(name="web1")
    HostKey.objects.create(host=host, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:abc")
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    run("trust", "web1", "abc")  # the SHA256: prefix is optional
    key = HostKey.objects.get()
    assert (key.state, key.approved_by) == (HostKey.State.TRUSTED, "os-user")
    run("revoke", "web1", "SHA256:abc")
    assert HostKey.objects.get().state == HostKey.State.REVOKED
    with pytest.raises(CommandError, match="no key with fingerprint SHA256:zzz"):
        run("trust", "web1", "SHA256:zzz")

    # Trusting a key by its fingerprint is an explicit decision: it replaces the trusted key of its type.
    HostKey.objects.filter(fingerprint="SHA256:abc").update(state=HostKey.State.TRUSTED)
    HostKey.objects.create(host=host, key_type="ssh-ed25519", public_key="BBBB", fingerprint="SHA256:new")
    out = run("trust", "web1", "SHA256:new")
    assert "Revoked the ssh-ed25519 key it replaces: SHA256:abc." in out
    assert HostKey.objects.get(fingerprint="SHA256:abc").state == HostKey.State.REVOKED
    with pytest.raises(CommandError, match="no host named 'nope'"):
        run("trust", "nope", "SHA256:abc")


def test_it_enables_and_disables_a_host(monkeypatch) -> None:
    add_password_host(monkeypatch, "web1")
    run("disable", "web1")
    assert not Host.objects.get(name="web1").enabled
    run("enable", "web1")
    assert Host.objects.get(name="web1").enabled


def test_it_removes_a_host_and_its_unshared_credential(monkeypatch) -> None:
    add_password_host(monkeypatch, "web1")
    run("add", "web2", "--address", "10.0.0.6", "--username", "ops", "--use-credential", "web1")
    HostKey.objects.create(
        host=Host.objects.get(name="web1"), key_type="t", public_key="A", fingerprint="SHA256:a"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="--yes"):
        run("remove", "web1")

    out = run("remove", "web1", "--yes")
    assert "kept" in out
    assert not Host.objects.filter(name="web1").exists()
    assert not HostKey.objects.exists()
    assert Credential.objects.filter(name="web1").exists()

    run("remove", "web2", "--yes")
    assert not Host.objects.exists()
    assert not Credential.objects.exists()
