"""Why ``ssh_list_hosts`` came back empty, in words that say whom to ask for what."""

from __future__ import annotations

from hosts.access import ClientAccess, visible_hosts
from hosts.inventory import list_hosts
from hosts.models import Host


def empty_reason(access: ClientAccess, filtered: bool) -> str:
    """The note for an empty host list: no hosts at all, no grant, or only the filter matched none."""
    if access.problem:
        return access.problem
    if not Host.objects.filter(enabled=True).exists():
        return "No hosts are registered yet. An admin registers hosts in the sshcontrol admin."
    who = f"client '{access.name}'"
    if not access.grants:
        return f"Hosts are registered, but {who} has no grant yet; ask an administrator for one."
    if filtered and visible_hosts(access, list_hosts()):
        return "No host you may use matches this tag or search."
    return f"No grant of {who} covers a registered host; ask an administrator for one."
