"""The jump host network (tests/netns.py), built once per run and torn down by a finalizer.

The jump tests that go through the MCP tools use tests/mcp's ``mcp`` harness.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sshlib.connect import ConnectSpec
from tests.mcp.conftest import mcp  # noqa: F401  (the fixture, used by name)
from tests.netns import JumpNet, NetnsSshServer, netns_unavailable


@pytest.fixture(scope="session")
def jump_net(request: pytest.FixtureRequest) -> Iterator[JumpNet]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"jump host tests need network namespaces: {reason}")
    net = JumpNet.create()
    request.addfinalizer(net.destroy)
    yield net


def spec_of(server: NetnsSshServer, name: str, **overrides: object) -> ConnectSpec:
    """A password spec of one namespaced server, its current host key trusted."""
    key = server.host_key("ed25519")
    fields: dict[str, object] = {
        "address": server.address,
        "port": server.port,
        "username": server.user,
        "password": server.password,
        "trusted_keys": ((key.get_name(), key.get_base64()),),
        "connect_timeout": 5.0,
        "name": name,
        "host_ref": name,
    }
    fields.update(overrides)
    return ConnectSpec(**fields)  # type: ignore[arg-type]
