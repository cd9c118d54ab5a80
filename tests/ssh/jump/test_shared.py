"""Sessions through the same jump hosts share one connection to each hop (sshlib/jumps.py).

In network namespaces (tests/netns.py): t1 behind j1, t2 behind j1 then j2. j1 serves each
connection with its own ``sshd -i``, so the sshd processes of j1's user count its connections.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sshlib.connect import ConnectSpec
from sshlib.execute import ExecRequest, run_command
from sshlib.jumps import JumpPool
from sshlib.sessions import Session, SessionRegistry
from tests.netns import JumpNet
from tests.polling import wait_until
from tests.ssh.jump.conftest import spec_of
from tests.ssh.jump.test_chain import one_hop, two_hops
from tests.sshd import reap_user_processes


@pytest.fixture
def sessions(jump_net: JumpNet) -> Iterator[SessionRegistry]:
    registry = SessionRegistry()
    j1 = jump_net.servers["j1"]
    wait_until(lambda: not j1.user_processes("sshd"), message="j1 free of earlier connections")
    yield registry
    registry.close_all()


def j1_connections(net: JumpNet) -> int:
    """j1's logged-in connections: one unprivileged ``sshd: user`` per connection in inetd mode.

    Matched with its title: a killed one lingers as a nameless zombie until init reaps it.
    """
    return len(net.servers["j1"].user_processes("^sshd: "))


def run(session: Session, spec: ConnectSpec, command: str) -> tuple[str, bool]:
    client, reconnected = session.client(lambda: spec)
    return run_command(client, ExecRequest(command)).stdout.strip(), reconnected


def test_sessions_through_one_jump_host_share_its_connection(
    sessions: SessionRegistry, jump_net: JumpNet
) -> None:
    spec = one_hop(jump_net)
    first = sessions.open("s1", "t1", spec)
    alone = wait_until(lambda: j1_connections(jump_net), message="j1's connection")
    others = [sessions.open(f"s{i}", "t1", spec) for i in range(2, 6)]

    hop = first.connection.hops[0]
    assert all(s.connection.hops[0] is hop for s in others)
    assert j1_connections(jump_net) == alone  # five sessions, one login on the bastion
    assert [run(s, spec, "whoami")[0] for s in (first, *others)] == [jump_net.servers["t1"].user] * 5

    # The hop stays while any session uses it, and closes with the last one.
    for session in (first, *others[:-1]):
        sessions.close(session.session_id)
    assert hop.is_active() and others[-1].connection.is_active()
    sessions.close(others[-1].session_id)
    assert not hop.is_active()
    assert sessions.jumps.held() == []
    wait_until(lambda: not j1_connections(jump_net), message="j1's connection to end with the last session")


def test_a_longer_chain_shares_its_first_hop_with_a_shorter_one(
    sessions: SessionRegistry, jump_net: JumpNet
) -> None:
    near = sessions.open("near", "t1", one_hop(jump_net))
    far = sessions.open("far", "t2", two_hops(jump_net))
    assert far.connection.hops[0] is near.connection.hops[0]
    assert [hop.name for hop in far.connection.hops] == ["j1", "j2"]
    assert run(far, two_hops(jump_net), "echo $SSH_CONNECTION")[0].split()[0] == jump_net.addr(9)

    sessions.close("near")
    assert far.connection.is_active()  # j1 is still held, by j2's connection
    sessions.close("far")
    assert sessions.jumps.held() == []


def test_a_changed_hop_spec_is_another_chain(sessions: SessionRegistry, jump_net: JumpNet) -> None:
    # A key trusted since (or a new credential) is verified on a connection of its own.
    spec = one_hop(jump_net)
    first = sessions.open("a", "t1", spec)
    j1 = jump_net.servers["j1"]
    key = j1.host_key("ed25519")
    other_hop = spec_of(j1, "j1", trusted_keys=((key.get_name(), key.get_base64()), ("ssh-rsa", "AAAA")))
    second = sessions.open("b", "t1", ConnectSpec(**{**spec.__dict__, "hops": (other_hop,)}))
    assert first.connection.hops[0] is not second.connection.hops[0]
    assert len(sessions.jumps.held()) == 2


def test_every_session_through_a_dropped_jump_connection_reconnects_through_a_new_shared_one(
    sessions: SessionRegistry, jump_net: JumpNet
) -> None:
    near_spec, far_spec = one_hop(jump_net), two_hops(jump_net)
    near = [sessions.open("near0", "t1", near_spec)]
    one_login = wait_until(lambda: j1_connections(jump_net), message="j1's connection")
    near += [sessions.open(f"near{i}", "t1", near_spec) for i in (1, 2)]
    far = sessions.open("far", "t2", far_spec)
    old_hop = far.connection.hops[0]

    # j1's side of the jump connection dies, as a bastion restart does it.
    reap_user_processes(jump_net.servers["j1"].user)
    wait_until(
        lambda: not any(s.connection.is_active() for s in (*near, far)),
        message="every session through j1 to see it go",
    )

    results = [run(s, near_spec, "echo back") for s in near] + [run(far, far_spec, "echo far")]
    assert results == [("back", True)] * 3 + [("far", True)]
    new_hop = far.connection.hops[0]
    assert new_hop is not old_hop and new_hop.is_active()
    assert all(s.connection.hops[0] is new_hop for s in near)
    assert j1_connections(jump_net) == one_login
    # The dead hop was let go by its last user; only the new chain (j1, and j2 over it) is held.
    assert len(sessions.jumps.held()) == 2


def test_a_failed_open_holds_nothing(jump_net: JumpNet) -> None:
    pool = JumpPool()
    spec = two_hops(jump_net)
    broken = ConnectSpec(
        **{**spec.__dict__, "hops": (spec.hops[0], spec_of(jump_net.servers["j2"], "j2", password="wrong"))}
    )
    from sshlib.connect import open_connection
    from sshlib.errors import AuthenticationFailed

    with pytest.raises(AuthenticationFailed, match="jump host 'j2'"):
        open_connection(broken, pool)
    assert pool.held() == []
    wait_until(lambda: not j1_connections(jump_net), message="j1's connection to be let go")


def test_a_session_whose_target_drops_reconnects_over_the_same_live_jump_connection(
    sessions: SessionRegistry, jump_net: JumpNet
) -> None:
    spec = one_hop(jump_net)
    session = sessions.open("alone", "t1", spec)  # the hop's only user
    hop = session.connection.hops[0]
    t1 = jump_net.servers["t1"]
    wait_until(lambda: t1.user_processes("^sshd: "), message="t1's logged-in session process")
    reap_user_processes(t1.user)  # the target restarts; the bastion stays up
    wait_until(lambda: not session.connection.is_active(), message="the session to see its target go")
    assert hop.is_active()

    assert run(session, spec, "echo again") == ("again", True)
    assert session.connection.hops[0] is hop  # not closed as its last user and re-opened
    assert sessions.jumps.held() == [hop]
