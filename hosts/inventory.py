"""Looking hosts up by the name a client gives."""

from __future__ import annotations

from hosts.models import Host


class HostNotFound(LookupError):
    """No registered host has that name."""


class HostDisabled(PermissionError):
    """The host exists but an admin disabled it."""


def get_enabled_host(name: str) -> Host:
    """The enabled host called ``name`` (with its credential loaded). Raises HostNotFound, HostDisabled."""
    try:
        host = Host.objects.select_related("credential").get(name=name)
    except Host.DoesNotExist:
        raise HostNotFound(
            f"no host named {name!r} is registered; ssh_list_hosts shows the hosts you can use"
        ) from None
    if not host.enabled:
        raise HostDisabled(f"host '{name}' is disabled by an administrator")
    return host


def list_hosts(tag: str | None = None, search: str | None = None) -> list[Host]:
    """Enabled hosts, filtered by exact tag and by a case-insensitive search.

    The search covers name, address, description and tags.
    """
    hosts = list(
        Host.objects.filter(enabled=True)
        .select_related("credential")
        .prefetch_related("host_keys")
        .order_by("name")
    )
    # Tags live in a JSON list; filtering in Python keeps this identical on SQLite and
    # PostgreSQL (JSON containment lookups are not supported on SQLite), and the
    # inventory is small.
    if tag:
        hosts = [h for h in hosts if tag in h.tag_list]
    if search:
        needle = search.strip().casefold()
        hosts = [h for h in hosts if needle in _haystack(h)]
    return hosts


def _haystack(host: Host) -> str:
    return "\n".join([host.name, host.address, host.description, *host.tag_list]).casefold()
