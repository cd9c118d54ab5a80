"""Secrets where the connection is made: the connection specs, and the sudo password per run.

The specs are built in ``hosts/specs.py`` (the one place host credentials are decrypted),
re-exported here for the runtime; this module adds the sudo password, decrypted for one run
in the process that makes the SSH connection, never where a model could see it.
"""

from __future__ import annotations

from hosts.models import Credential

# Built with the inventory (hosts/specs.py), so that a host key scan reaches a host behind its
# jump hosts with the same specs; the runtime keeps importing them from here.
from hosts.specs import JumpHostDisabled, NoCredential, build_spec

__all__ = ["JumpHostDisabled", "NoCredential", "NoSudoPassword", "build_spec", "sudo_password"]


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
