"""Connecting to a real sshd: authentication, host key pinning, socket options, scanning."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import paramiko
import pytest

from sshlib.connect import ConnectSpec, fingerprint, open_connection, scan_host_keys, seen_key
from sshlib.errors import AuthenticationFailed, ConnectFailed, HostKeyChanged, HostKeyUnknown
from sshlib.execute import ExecRequest, run_command
from tests.polling import wait_until
from tests.ssh.conftest import password_spec, trusted
from tests.sshd import SshServer, free_port


def whoami(spec: ConnectSpec) -> str:
    conn = open_connection(spec)
    try:
        assert conn.is_active()
        return run_command(conn.client, ExecRequest("whoami")).stdout.strip()
    finally:
        conn.close()
        assert not conn.is_active()


def test_it_computes_fingerprints_like_ssh_keygen(sshd: SshServer) -> None:
    import subprocess

    for kind, path in sshd.host_key_files.items():
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True, text=True, check=True
        )
        assert fingerprint(sshd.host_key(kind)) == out.stdout.split()[1]
    key = sshd.host_key("ed25519")
    assert seen_key(key).key_type == "ssh-ed25519"
    assert seen_key(key).public_key == key.get_base64()


def test_it_authenticates_with_a_password(sshd: SshServer) -> None:
    assert whoami(password_spec(sshd)) == sshd.user


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_it_authenticates_with_a_private_key(sshd: SshServer, kind: str) -> None:
    spec = password_spec(sshd, password=None, private_key=sshd.private_key_text(kind))
    assert whoami(spec) == sshd.user


def test_it_authenticates_with_a_pem_rsa_key(sshd: SshServer, tmp_path: object) -> None:
    from cryptography.hazmat.primitives import serialization

    text = sshd.private_key_text("rsa")
    loaded = serialization.load_ssh_private_key(text.encode(), password=None)
    pem = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"pem pass"),
    ).decode()
    assert "BEGIN RSA PRIVATE KEY" in pem
    spec = password_spec(sshd, password=None, private_key=pem, passphrase="pem pass")
    assert whoami(spec) == sshd.user


def test_it_decrypts_an_encrypted_key_with_its_passphrase(sshd: SshServer) -> None:
    assert sshd.encrypted_key is not None
    spec = password_spec(
        sshd,
        password=None,
        private_key=sshd.encrypted_key.read_text(),
        passphrase=sshd.encrypted_key_passphrase,
    )
    assert whoami(spec) == sshd.user


def test_it_reports_a_wrong_passphrase_without_revealing_it(sshd: SshServer) -> None:
    assert sshd.encrypted_key is not None
    spec = password_spec(
        sshd, password=None, private_key=sshd.encrypted_key.read_text(), passphrase="not the passphrase"
    )
    with pytest.raises(AuthenticationFailed, match="could not be decrypted") as info:
        open_connection(spec)
    assert "not the passphrase" not in str(info.value)
    missing = password_spec(sshd, password=None, private_key=sshd.encrypted_key.read_text())
    with pytest.raises(AuthenticationFailed, match="no passphrase"):
        open_connection(missing)


def test_it_rejects_a_wrong_password_without_revealing_it(sshd: SshServer) -> None:
    with pytest.raises(AuthenticationFailed, match=f"authentication failed for user {sshd.user}") as info:
        open_connection(password_spec(sshd, password="wrong password 123"))
    assert "wrong password 123" not in str(info.value)


def test_it_refuses_an_unknown_host_key_and_names_its_fingerprint(sshd: SshServer) -> None:
    with pytest.raises(HostKeyUnknown) as info:
        open_connection(password_spec(sshd, trusted_keys=()))
    fingerprints = {fingerprint(key) for key in sshd.host_public_keys()}
    assert info.value.seen.fingerprint in fingerprints
    assert info.value.seen.fingerprint in str(info.value)


def test_it_trusts_on_first_use_and_reports_the_key(sshd: SshServer) -> None:
    conn = open_connection(password_spec(sshd, trusted_keys=(), trust_on_first_use=True))
    try:
        assert conn.is_active()
        assert conn.host_key in [seen_key(key) for key in sshd.host_public_keys()]
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_it_connects_when_only_one_of_the_servers_keys_is_trusted(sshd: SshServer, kind: str) -> None:
    conn = open_connection(password_spec(sshd, trusted_keys=trusted(sshd, kind)))
    try:
        assert conn.host_key == seen_key(sshd.host_key(kind))
    finally:
        conn.close()


def test_it_ignores_trust_on_first_use_once_keys_are_trusted(sshd: SshServer) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(sshd.client_keys["ed25519"]))
    spec = password_spec(
        sshd, trusted_keys=((other.get_name(), other.get_base64()),), trust_on_first_use=True
    )
    with pytest.raises(HostKeyChanged) as info:
        open_connection(spec)
    assert info.value.seen == seen_key(sshd.host_key("ed25519"))


@pytest.fixture
def second_server() -> Iterator[SshServer]:
    server = SshServer.create().start()
    yield server
    server.remove()


def test_it_detects_a_changed_host_key(second_server: SshServer) -> None:
    old = trusted(second_server)
    second_server.regenerate_host_keys()
    with pytest.raises(HostKeyChanged) as info:
        open_connection(password_spec(second_server, trusted_keys=old))
    assert info.value.seen in [seen_key(key) for key in second_server.host_public_keys()]
    assert "host key changed" in str(info.value)
    assert second_server.password not in str(info.value)


def test_it_reports_a_refused_connection_quickly() -> None:
    port = free_port()
    started = time.monotonic()
    spec = ConnectSpec(address="127.0.0.1", port=port, username="nobody", password="x", connect_timeout=30)
    with pytest.raises(ConnectFailed, match=f"connection refused by 127.0.0.1:{port}"):
        open_connection(spec)
    # Not the connect timeout waited out: far below it, with room for a busy machine.
    assert time.monotonic() - started < 10.0


def test_it_times_out_on_a_server_that_never_speaks() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        spec = ConnectSpec(
            address="127.0.0.1", port=port, username="nobody", password="x", connect_timeout=0.5
        )
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}"):
            open_connection(spec)
        assert time.monotonic() - started < 3.0


def test_it_sets_tcp_nodelay_and_keepalive(sshd: SshServer) -> None:
    conn = open_connection(password_spec(sshd))
    try:
        transport = conn.client.get_transport()
        assert transport is not None
        sock = transport.sock
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    finally:
        conn.close()


def test_it_does_not_leak_sockets_on_failed_connects(sshd: SshServer) -> None:
    import os

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    spec = password_spec(sshd, password="wrong")
    with pytest.raises(AuthenticationFailed):
        open_connection(spec)
    before = open_fds()
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            open_connection(spec)
        with pytest.raises(HostKeyUnknown):
            open_connection(password_spec(sshd, trusted_keys=()))
    # Sockets of refused connections close as paramiko's transport threads end.
    wait_until(lambda: open_fds() <= before + 1, 10, "the refused connections' sockets closed")


def test_it_scans_every_host_key_type(sshd: SshServer) -> None:
    seen = scan_host_keys(sshd.address, sshd.port, timeout=5.0)
    assert sorted(k.key_type for k in seen) == sorted(key.get_name() for key in sshd.host_public_keys())
    assert {k.fingerprint for k in seen} == {
        fingerprint(sshd.host_key(kind)) for kind in ("ed25519", "ecdsa", "rsa")
    }


def test_scanning_a_closed_port_fails_cleanly() -> None:
    with pytest.raises(ConnectFailed, match="connection refused"):
        scan_host_keys("127.0.0.1", free_port(), timeout=2.0)


def test_a_server_without_any_trusted_key_type_is_reported_as_changed(sshd: SshServer) -> None:
    unrelated = paramiko.ECDSAKey.generate(bits=384)  # the server only has a nistp256 ECDSA key
    spec = password_spec(sshd, trusted_keys=((unrelated.get_name(), unrelated.get_base64()),))
    with pytest.raises(HostKeyChanged, match="none of the trusted key types") as info:
        open_connection(spec)
    assert info.value.seen in [seen_key(key) for key in sshd.host_public_keys()]


def test_it_keeps_secrets_out_of_a_connect_spec_s_repr() -> None:
    spec = ConnectSpec(
        "10.0.0.5", 22, "deploy", password="pw-SECRET-1", private_key="KEY-SECRET-2", passphrase="pp-SECRET-3"
    )
    shown = repr(spec)
    assert "SECRET" not in shown and "10.0.0.5" in shown
