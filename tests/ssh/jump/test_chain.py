"""Connecting through jump hosts in network namespaces: the target is reachable only through them."""

from __future__ import annotations

from dataclasses import replace

import paramiko
import pytest

from sshlib.connect import Connection, ConnectSpec, _QuickAckSocket, fingerprint, open_connection
from sshlib.errors import ConnectFailed, HostKeyChanged, HostKeyUnknown
from sshlib.execute import ExecRequest, run_command
from tests.netns import JumpNet
from tests.polling import wait_until
from tests.ssh.jump.conftest import spec_of


def run(conn: Connection, command: str) -> str:
    return run_command(conn.client, ExecRequest(command)).stdout.strip()


def one_hop(net: JumpNet) -> ConnectSpec:
    return spec_of(net.servers["t1"], "t1", hops=(spec_of(net.servers["j1"], "j1"),))


def two_hops(net: JumpNet) -> ConnectSpec:
    hops = (spec_of(net.servers["j1"], "j1"), spec_of(net.servers["j2"], "j2"))
    return spec_of(net.servers["t2"], "t2", hops=hops)


def test_it_reaches_a_target_only_through_its_jump_host(jump_net: JumpNet) -> None:
    direct = spec_of(jump_net.servers["t1"], "t1")
    with pytest.raises(ConnectFailed, match="cannot connect to"):
        open_connection(direct)

    conn = open_connection(one_hop(jump_net))
    try:
        assert run(conn, "whoami") == jump_net.servers["t1"].user
        # The target sees the connection come from the jump host's end of their link.
        assert run(conn, "echo $SSH_CONNECTION").split()[0] == jump_net.addr(1)
        assert [hop.name for hop in conn.hops] == ["j1"]
        assert conn.is_active()
    finally:
        conn.close()
    assert not conn.is_active()
    assert not any(hop.is_active() for hop in conn.hops)
    # Closing the session closed the jump connection too: j1's sshd for it has ended.
    j1 = jump_net.servers["j1"]
    wait_until(lambda: not j1.user_processes("sshd"), message="j1's session processes to end")


def test_it_goes_through_a_chain_of_two_jump_hosts(jump_net: JumpNet) -> None:
    # j1 alone cannot reach t2: the second hop is really needed.
    alone = spec_of(jump_net.servers["t2"], "t2", hops=(spec_of(jump_net.servers["j1"], "j1"),))
    with pytest.raises(ConnectFailed, match="jump host 'j1' could not connect to"):
        open_connection(alone)

    conn = open_connection(two_hops(jump_net))
    try:
        assert run(conn, "whoami") == jump_net.servers["t2"].user
        assert run(conn, "echo $SSH_CONNECTION").split()[0] == jump_net.addr(9)
        assert [hop.name for hop in conn.hops] == ["j1", "j2"]
    finally:
        conn.close()


def test_it_refuses_an_unknown_key_on_a_hop_and_names_the_hop(jump_net: JumpNet) -> None:
    spec = two_hops(jump_net)
    unpinned = replace(spec, hops=(spec.hops[0], replace(spec.hops[1], trusted_keys=())))
    with pytest.raises(HostKeyUnknown) as excinfo:
        open_connection(unpinned)
    assert str(excinfo.value).startswith("jump host 'j2': host key ssh-ed25519 SHA256:")
    assert excinfo.value.host_ref == "j2"
    assert excinfo.value.seen.public_key == jump_net.servers["j2"].host_key().get_base64()
    wait_until(lambda: not jump_net.servers["j1"].user_processes("sshd"), message="j1 to be let go")


def test_it_refuses_a_changed_key_on_a_hop_and_names_the_hop(jump_net: JumpNet) -> None:
    spec = two_hops(jump_net)
    # j2 presents its own key where t1's (another ed25519 key) is the one trusted.
    elsewhere = spec_of(jump_net.servers["t1"], "t1").trusted_keys
    changed = replace(spec, hops=(spec.hops[0], replace(spec.hops[1], trusted_keys=elsewhere)))
    with pytest.raises(HostKeyChanged) as excinfo:
        open_connection(changed)
    assert str(excinfo.value).startswith("jump host 'j2': host key changed: server presented ssh-ed25519")
    assert excinfo.value.host_ref == "j2"


def test_it_reports_what_a_hop_offers_when_it_has_none_of_the_trusted_key_types(jump_net: JumpNet) -> None:
    spec = two_hops(jump_net)
    ecdsa = paramiko.ECDSAKey.generate()
    only_ecdsa = ((ecdsa.get_name(), ecdsa.get_base64()),)
    changed = replace(spec, hops=(spec.hops[0], replace(spec.hops[1], trusted_keys=only_ecdsa)))
    with pytest.raises(HostKeyChanged) as excinfo:
        open_connection(changed)
    # The offered key was fetched through j1, the only way to reach j2.
    assert str(excinfo.value) == (
        "jump host 'j2': host key changed: server offers none of the trusted key types; "
        f"it presented ssh-ed25519 {fingerprint(jump_net.servers['j2'].host_key())}"
    )
    assert excinfo.value.host_ref == "j2"


def test_it_acknowledges_what_the_first_jump_host_relays_at_once(jump_net: JumpNet) -> None:
    # The jump host's sshd relays in small writes without TCP_NODELAY: a delayed ACK of ours
    # held each command through it for ~40 ms after an idle moment (bench/jump.py).
    conn = open_connection(two_hops(jump_net))
    try:
        first, second = (hop.client.get_transport() for hop in conn.hops)
        assert first is not None and isinstance(first.sock, _QuickAckSocket)
        # Its reads re-arm quick-ack: it keeps paramiko's 0.1 s poll, the others sleep (sshlib/quiet.py).
        assert first.sock.gettimeout() == 0.1
        assert second is not None and second.sock.gettimeout() == 30.0
        assert second is not None and isinstance(second.sock, paramiko.Channel)
        assert run(conn, "echo relayed") == "relayed"
    finally:
        conn.close()
    direct = open_connection(spec_of(jump_net.servers["j1"], "j1"))
    try:
        transport = direct.client.get_transport()
        assert transport is not None and not isinstance(transport.sock, _QuickAckSocket)
    finally:
        direct.close()
