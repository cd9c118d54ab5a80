"""Looking hosts up by the name a client gives. CONTRACT — to be implemented."""

from __future__ import annotations

from hosts.models import Host


class HostNotFound(LookupError):
    """No registered host has that name."""


class HostDisabled(PermissionError):
    """The host exists but an admin disabled it."""


def get_enabled_host(name: str) -> Host:
    """The enabled host called ``name`` (with its credential loaded). Raises HostNotFound, HostDisabled."""
    raise NotImplementedError


def list_hosts(tag: str | None = None, search: str | None = None) -> list[Host]:
    """Enabled hosts, filtered by exact tag and by a case-insensitive search over name/address/description/tags."""
    raise NotImplementedError
