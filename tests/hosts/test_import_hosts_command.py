"""``manage.py import_hosts``: what it creates, updates and skips, and what it never stores."""

from __future__ import annotations

import shutil
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hosts.models import Credential, Host

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parent.parent / "data"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_hosts", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _rows(out: str) -> list[str]:
    """The per-host lines, whitespace and tense aside."""
    lines = out.splitlines()[:-1]  # the last line is the summary
    return [" ".join(line.replace("would be ", "").split()) for line in lines]


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if f" {name} " in f" {line} ")


def test_it_imports_an_ssh_config_with_a_per_host_report() -> None:
    out, _ = run("--ssh-config", str(DATA / "ssh_config"))
    assert set(Host.objects.values_list("name", flat=True)) == {
        "app1",
        "app2",
        "cache",
        "web1",
        "db-example-com",
        "db2",
        "bastion",
    }
    web1 = Host.objects.get(name="web1")
    assert (web1.address, web1.port, web1.username, web1.credential) == (
        "web1.example.com",
        2222,
        "webadmin",
        None,
    )
    db = Host.objects.get(name="db-example-com")
    assert db.proxy_jump == "jump@bastion.example.com:2200"
    assert "Imported from" in db.description
    assert "named 'db-example-com' (from 'db.example.com')" in out
    assert "ProxyJump jump@bastion.example.com:2200 recorded" in out
    assert "key file keys/id_db not imported (see --import-keys)" in out
    assert _line(out, "web1").startswith("created")
    assert "7 host(s): 7 created, 0 updated, 0 unchanged, 0 skipped" in out
    assert not Credential.objects.exists()


def test_it_writes_nothing_in_a_dry_run() -> None:
    dry, _ = run("--ansible-inventory", str(DATA / "ansible" / "inventory.ini"), "--dry-run")
    out = dry
    assert not Host.objects.exists()
    assert not Credential.objects.exists()
    assert _line(out, "web01-example-com").startswith("would be created")
    assert "(dry run: nothing was written)" in out

    # The real run reports the same, in the past tense.
    real, _ = run("--ansible-inventory", str(DATA / "ansible" / "inventory.ini"))
    assert Host.objects.count() == 6
    assert _rows(dry) == _rows(real)


def test_it_imports_an_ansible_inventory_with_groups_as_tags() -> None:
    out, _ = run("--ansible-inventory", str(DATA / "ansible" / "inventory.ini"))
    web = Host.objects.get(name="web01-example-com")
    assert (web.username, web.port, web.tags) == ("www", 2201, ["prod", "webservers"])
    assert Host.objects.get(name="app-internal").proxy_jump == "bastion.example.com"
    assert "skipped" in _line(out, "localhost") and "not an SSH connection" in out
    assert "skipped" in _line(out, "db2") and "not a number from 1 to 65535" in out
    # The password is neither stored nor printed without --import-passwords.
    assert "ansible_password ignored: passwords are stored only with --import-passwords" in out
    assert "Inventory-Password-77" not in out
    assert "Become-Secret-42" not in out
    assert Host.objects.get(name="db1").credential is None
    assert not Credential.objects.exists()


def test_it_stores_inventory_passwords_encrypted_only_when_asked() -> None:
    out, _ = run("--ansible-inventory", str(DATA / "ansible" / "inventory.ini"), "--import-passwords")
    credential = Host.objects.get(name="db1").credential
    assert credential is not None and credential.kind == Credential.Kind.PASSWORD
    assert credential.secret() == "Inventory-Password-77"
    assert credential.secret_encrypted.startswith("sshc:v1:")
    assert "Inventory-Password-77" not in out
    # The become password is never stored, flag or not.
    assert Credential.objects.count() == 1


def test_it_skips_existing_hosts_unless_updating() -> None:
    Host.objects.create(name="web1", address="old.example.com", port=22, username="ops", tags=["mine"])
    out, _ = run("--ssh-config", str(DATA / "ssh_config"))
    assert "already registered" in _line(out, "web1")
    assert Host.objects.get(name="web1").address == "old.example.com"

    out, _ = run("--ssh-config", str(DATA / "ssh_config"), "--update")
    web1 = Host.objects.get(name="web1")
    assert (web1.address, web1.port, web1.username) == ("web1.example.com", 2222, "webadmin")
    assert web1.tags == ["mine"]  # tags an admin gave are kept
    line = _line(out, "web1")
    assert line.startswith("updated") and "address old.example.com -> web1.example.com" in line
    assert _line(out, "cache").startswith("unchanged")


def test_it_attaches_an_existing_credential_and_adds_tags() -> None:
    credential = Credential(name="fleet")
    credential.store_password("pw")
    credential.save()
    run("--ssh-config", str(DATA / "ssh_config"), "--credential", "fleet", "--tag", "imported")
    host = Host.objects.get(name="cache")
    assert host.credential == credential
    assert host.tags == ["imported"]
    with pytest.raises(CommandError, match="no credential named 'nope'"):
        run("--ssh-config", str(DATA / "ssh_config"), "--credential", "nope")


def test_it_imports_key_files_and_skips_passphrase_protected_ones(tmp_path: Path) -> None:
    shutil.copytree(DATA, tmp_path / "data")
    keys = tmp_path / "data" / "keys"
    keys.mkdir()
    for name, passphrase in (("id_default", ""), ("id_db", "secret phrase")):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "t", "-f", str(keys / name)],
            check=True,
        )
    out, _ = run("--ssh-config", str(tmp_path / "data" / "ssh_config"), "--import-keys")

    cache = Host.objects.get(name="cache")
    assert cache.credential is not None
    assert cache.credential.secret() == (keys / "id_default").read_text()
    assert cache.credential.public_key.split()[:2] == (keys / "id_default.pub").read_text().split()[:2]
    # Every host using the same key file shares one credential.
    assert Credential.objects.count() == 1
    assert Host.objects.filter(credential=cache.credential).count() == 5

    db = Host.objects.get(name="db2")
    assert db.credential is None
    assert "keys/id_db skipped: it is passphrase-protected" in out
    assert "PRIVATE KEY" not in out


def test_it_needs_a_user_for_new_hosts(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host lonely\n  HostName 192.0.2.1\n")
    out, _ = run("--ssh-config", str(config))
    assert "no user given" in out and not Host.objects.exists()
    run("--ssh-config", str(config), "--default-user", "root")
    assert Host.objects.get(name="lonely").username == "root"


def test_it_prints_progress_for_large_imports(tmp_path: Path) -> None:
    inventory = tmp_path / "big.ini"
    inventory.write_text("[fleet]\nnode[001:250] ansible_user=ops\n")
    out, err = run("--ansible-inventory", str(inventory), "--progress-every", "100")
    assert err.splitlines() == [
        "100/250 hosts processed",
        "200/250 hosts processed",
        "250/250 hosts processed",
    ]
    assert Host.objects.count() == 250
    assert "250 created" in out


def test_it_reports_an_unreadable_source() -> None:
    with pytest.raises(CommandError, match="cannot read"):
        run("--ssh-config", "/nonexistent/config")
