"""Shared fixtures: an isolated data directory, a real sshd, registered hosts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hostkeys import trust
from tests.sshd import SshServer

# The fixtures that start an OpenSSH server: the suite's own, the second server of the
# changed-host-key test, and the jump-host network (tests/ssh/jump).
OPENSSH_FIXTURES = frozenset({"sshd", "second_server", "jump_net"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs OpenSSH (one of those fixtures, or one built on them such
    as ``make_host``), so ``-m "not sshd"`` runs the rest without it."""
    for item in items:
        if OPENSSH_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sshd)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's own data directory (tests/settings.py), after the test databases are gone."""
    from django.conf import settings

    made = getattr(settings, "TEST_DATA_DIR_MADE", "")
    if made:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test databases; before they are dropped, call threads let go of them.

    Call threads keep their connections between calls; PostgreSQL refuses to drop a database
    with sessions open, which left ``test_<name>`` behind with a teardown warning. A thread a
    test starts itself closes its own (``tests.database.closing_connections``): once it has
    ended, only the garbage collector would.
    """
    yield
    from sshcontrol.mcp.threads import close_thread_connections

    close_thread_connections()


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """One real OpenSSH server for the whole run (restarted by tests that change its keys)."""
    server = SshServer.create().start()
    yield server
    server.remove()


@pytest.fixture
def make_host(db: None, sshd: SshServer) -> Callable[..., object]:
    """Register the suite's sshd as a host: ``make_host("web1", auth="password"|"ed25519"|"rsa"|"ecdsa")``."""
    from hosts.models import Credential, Host

    def factory(
        name: str = "testhost",
        auth: str = "password",
        trusted: bool = True,
        password: str | None = None,
        **fields: object,
    ) -> Host:
        credential = Credential(name=f"{name}-cred", kind="password" if auth == "password" else "private_key")
        if auth == "password":
            credential.set_secret(password if password is not None else sshd.password)
        else:
            credential.set_secret(sshd.private_key_text(auth))
        credential.save()
        host = Host.objects.create(
            name=name,
            address=sshd.address,
            port=sshd.port,
            username=sshd.user,
            credential=credential,
            **fields,
        )
        if trusted:
            for key in sshd.host_public_keys():
                trust(host, key)
        return host

    return factory


@pytest.fixture
def sudoers(sshd: SshServer) -> Iterator[None]:
    """Let the throwaway test user run anything with sudo, with its password."""
    if shutil.which("sudo") is None:
        pytest.fail("sudo is not installed (scripts/bootstrap installs it for the tests)")
    path = Path(f"/etc/sudoers.d/sshcontrol-test-{sshd.user}")
    path.write_text(f"{sshd.user} ALL=(ALL) ALL\nDefaults:{sshd.user} !lecture\n")
    os.chmod(path, 0o440)
    yield
    path.unlink()
