"""A sudo command that times out or is cancelled leaves no root process behind (real sshd, real sudo).

The process group kill that stops an ordinary command cannot signal root's processes; under
sudo the command runs beneath `timeout`, to which sudo relays the signal.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from hosts.models import Host
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]


def root_processes(marker: str) -> list[str]:
    """Root's processes running exactly ``marker`` (not sudo or a shell whose arguments contain it)."""
    found = subprocess.run(
        ["pgrep", "-u", "root", "-f", f"^{marker}$"], capture_output=True, text=True, check=False
    )
    return found.stdout.split()


@pytest.fixture
def marker() -> Iterator[str]:
    """A sleep length no other process uses; whatever is left with it is killed afterwards."""
    value = f"3{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    yield f"sleep {value}"
    for pid in root_processes(f"sleep {value}"):
        subprocess.run(["kill", "-KILL", pid], check=False)


@pytest.fixture
def sudo_agent(
    as_client: AsClient, make_host: Callable[..., Host], sshd: SshServer, sudoers: None
) -> McpHarness:
    web = make_host("web1")
    assert web.credential is not None
    web.credential.set_sudo_password(sshd.password)
    web.credential.save()
    return as_client("agent", hosts=[web], can_sudo=True)


def test_it_leaves_no_root_process_after_a_sudo_timeout(sudo_agent: McpHarness, marker: str) -> None:
    result = sudo_agent.ok("ssh_execute", host="web1", command=f"{marker}; echo done", sudo=True, timeout=2)
    assert result["timed_out"] and result["exit_status"] is None and "done" not in result["stdout"]
    wait_until(lambda: not root_processes(marker), 20, "a root process outlived its deadline")


def test_it_leaves_no_root_process_after_a_cancelled_sudo_call(sudo_agent: McpHarness, marker: str) -> None:
    call = sudo_agent.submit(
        "ssh_execute", host="web1", command=f"{marker}; echo done", sudo=True, timeout=60
    )
    wait_until(lambda: root_processes(marker), 20, "the command never started as root")
    call.cancel()
    wait_until(lambda: not root_processes(marker), 20, "a root process outlived its deadline")
