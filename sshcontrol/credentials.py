"""Turning a registered host into a ``ConnectSpec``: the one place credentials are decrypted.

It runs in the process that makes the SSH connection (the MCP server on the embedded
default, a Celery worker in distributed mode), never where a model could see the result.
"""

from __future__ import annotations

from django.conf import settings

from hosts import hostkeys
from hosts.models import Credential, Host
from sshlib.connect import ConnectSpec


class NoCredential(LookupError):
    """The host has no credential attached."""


def build_spec(host: Host) -> ConnectSpec:
    credential = host.credential
    if credential is None or not credential.has_secret:
        raise NoCredential(f"host '{host.name}' has no credential; an admin must attach one")
    secret = credential.secret()
    passphrase = credential.passphrase() or None
    is_password = credential.kind == Credential.Kind.PASSWORD
    return ConnectSpec(
        address=host.address,
        port=host.port,
        username=host.username,
        password=secret if is_password else None,
        private_key=None if is_password else secret,
        passphrase=passphrase,
        trusted_keys=hostkeys.trusted_keys(host),
        trust_on_first_use=host.trust_on_first_use,
        connect_timeout=settings.CONNECT_TIMEOUT,
        keepalive_seconds=settings.KEEPALIVE_SECONDS,
        secrets=tuple(s for s in (secret if is_password else "", passphrase or "") if s),
    )


class NoSudoPassword(LookupError):
    """The host's credential carries no sudo password."""


def sudo_password(host_id: int) -> str:
    """The sudo password of the host's credential, decrypted for one ``sudo -S`` run."""
    credential = Credential.objects.filter(hosts__pk=host_id).first()
    if credential is None or not credential.has_sudo_password:
        raise NoSudoPassword(
            "the host's credential has no sudo password; an administrator must set one to use sudo"
        )
    return credential.sudo_password()
