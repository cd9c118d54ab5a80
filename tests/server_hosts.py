"""A test's own OpenSSH server registered as a host, the way an administrator adds one.

The suite's sshd has ``make_host`` (tests/conftest.py); this is for the others: a second server
with another remote account, the jump network's namespaced servers (tests/netns.py).
"""

from __future__ import annotations

from typing import Literal

from hosts.models import Credential, Host
from tests.hostkeys import trust
from tests.sshd import SshServer


def register(
    server: SshServer,
    name: str,
    credential: Credential | Literal["password"] | None = "password",
    jump: Host | None = None,
) -> Host:
    """``server`` as host ``name`` (behind ``jump`` if given), its host keys trusted.

    ``credential``: ``"password"`` logs in with the server user's password (credential
    ``NAME-cred``); a ``Credential`` is saved and used as it is; ``None`` gives the host none.
    """
    if isinstance(credential, str):
        credential = Credential(name=f"{name}-cred")
        credential.store_password(server.password)
    if credential is not None:
        credential.save()
    host = Host.objects.create(
        name=name,
        address=server.address,
        port=server.port,
        username=server.user,
        credential=credential,
        jump_host=jump,
    )
    for key in server.host_public_keys():
        trust(host, key)
    return host
