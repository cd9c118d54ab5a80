"""The ssh_config and Ansible readers, against the sample files in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosts.importers import Candidate, InventoryError, host_name_for
from hosts.importers.ansible import expand_host_pattern, parse_inventory, read_inventory
from hosts.importers.ssh_config import parse_ssh_config, read_ssh_config

DATA = Path(__file__).resolve().parent.parent / "data"


def _by_alias(candidates: list[Candidate]) -> dict[str, Candidate]:
    return {c.alias: c for c in candidates}


def test_it_reads_an_ssh_config_with_includes_defaults_and_proxy_jump() -> None:
    parsed = read_ssh_config(DATA / "ssh_config")
    hosts = _by_alias(parsed.candidates)

    # Wildcard and negated patterns are not hosts; Match blocks are reported, not evaluated.
    assert set(hosts) == {"app1", "app2", "cache", "web1", "db.example.com", "db2", "bastion"}
    assert any("Match blocks are not evaluated" in note for note in parsed.notes)

    # From Include ssh_config.d/*.conf, in lexical order, with Host * defaults filled in.
    assert (hosts["app1"].address, hosts["app1"].port, hosts["app1"].username) == ("app1.internal", 22, "app")
    assert hosts["app2"].port == 2200
    assert (hosts["cache"].address, hosts["cache"].username) == ("10.0.0.5", "ops")
    assert hosts["cache"].source == "ssh_config.d/20-cache.conf:1"

    # An Include inside a Host block belongs to that block; the block's later lines still apply.
    assert (hosts["web1"].address, hosts["web1"].port, hosts["web1"].username) == (
        "web1.example.com",
        2222,
        "webadmin",
    )

    # First obtained value wins: the early "Host db*" beats the "Host *" default user.
    assert hosts["db2"].username == "dba"
    assert hosts["db.example.com"].address == "db.example.com"  # HostName %h
    assert hosts["db.example.com"].identity_file == "keys/id_db"
    assert hosts["db.example.com"].proxy_jump == "jump@bastion.example.com:2200"
    assert hosts["bastion"].proxy_jump == ""  # ProxyJump none
    assert hosts["bastion"].identity_file == "keys/id_default"


def test_it_does_not_follow_includes_of_an_uploaded_config() -> None:
    text = (DATA / "ssh_config").read_text()
    parsed = parse_ssh_config(text, "upload")
    assert "cache" not in _by_alias(parsed.candidates)
    assert any("Include is not followed" in note for note in parsed.notes)


def test_it_stops_an_include_loop(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("Include config\nHost a\n  User u\n")
    with pytest.raises(InventoryError, match="nested more than"):
        read_ssh_config(tmp_path / "config")


def test_it_reports_bad_ports_and_lines_in_an_ssh_config() -> None:
    parsed = parse_ssh_config("Host a\n  Port 99999\nHost b\n  User 'unbalanced\nHost c d\n", "x")
    hosts = _by_alias(parsed.candidates)
    assert "not a number from 1 to 65535" in hosts["a"].problem
    assert any("unbalanced quotes" in note for note in parsed.notes)
    assert hosts["c"].address == "c" and hosts["d"].username == ""


def test_it_reads_an_ansible_ini_inventory_with_groups_children_and_vars() -> None:
    parsed = read_inventory(DATA / "ansible" / "inventory.ini")
    hosts = _by_alias(parsed.candidates)
    assert set(hosts) == {
        "mail.example.com",
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
        "db1",
        "db2",
        "localhost",
        "app.internal",
    }
    web = hosts["web02.example.com"]
    # webservers is deeper than its parent prod, so its ansible_user wins; all:vars loses to both.
    assert (web.username, web.port, web.identity_file) == ("www", 2201, "keys/prod_key")
    assert web.tags == ["prod", "webservers"]
    assert hosts["db1"].username == "produser"
    assert hosts["db1"].address == "10.0.1.10"
    assert hosts["db1"].password_var == "ansible_password"
    assert "Inventory-Password-77" not in repr(hosts["db1"])
    assert any("ansible_become_password ignored" in note for note in hosts["db1"].notes)
    assert "not a number" in hosts["db2"].problem
    assert "not an SSH connection" in hosts["localhost"].problem
    assert hosts["mail.example.com"].username == "postmaster"  # host vars beat all:vars
    app = hosts["app.internal"]
    assert (app.port, app.proxy_jump, app.tags) == (2022, "bastion.example.com", ["jumped"])


def test_it_reads_an_ansible_yaml_inventory() -> None:
    parsed = read_inventory(DATA / "ansible" / "inventory.yml")
    hosts = _by_alias(parsed.candidates)
    assert set(hosts) == {"mail.example.com", "web1", "web2", "db1", "db2"}
    assert (hosts["web1"].address, hosts["web1"].username) == ("192.0.2.11", "www")
    assert hosts["web1"].tags == ["prod", "webservers"]
    assert hosts["web2"].port == 2222
    assert hosts["mail.example.com"].username == "admin"
    assert hosts["db2"].identity_file == "keys/prod_key"
    # A template is not evaluated and a vault value not decrypted; both are said so.
    assert "template" in hosts["db1"].problem
    assert hosts["db2"].password == ""
    assert any("vault-encrypted" in note for note in hosts["db2"].notes)


def test_it_detects_the_inventory_format_and_rejects_bad_yaml() -> None:
    assert _by_alias(parse_inventory("[web]\nw1\n", "hosts").candidates)["w1"].tags == ["web"]
    assert _by_alias(parse_inventory("all:\n  hosts:\n    h1:\n", "hosts").candidates)["h1"]
    with pytest.raises(InventoryError, match="not valid YAML"):
        parse_inventory("all: [\n", "inv.yml")
    with pytest.raises(InventoryError, match="mapping of group names"):
        parse_inventory("- a\n- b\n", "inv.yaml")


def test_it_expands_host_ranges() -> None:
    assert expand_host_pattern("web[01:03].x") == ["web01.x", "web02.x", "web03.x"]
    assert expand_host_pattern("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert expand_host_pattern("n[1:9:4]") == ["n1", "n5", "n9"]
    with pytest.raises(ValueError, match="more than"):
        expand_host_pattern("h[0:99999]")


def test_it_makes_host_names_from_aliases() -> None:
    assert host_name_for("web.example.com") == "web-example-com"
    assert host_name_for("db_1") == "db_1"
    assert host_name_for("..") == ""
