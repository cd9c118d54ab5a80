"""``ssh_list_hosts``: the hosts a client may use, and why the list is empty when it is.

The lookups are only reads, so the whole listing is retried on a transient database loss
(``sshcontrol.dbretry``); a database that stays away is a clear tool error, not a traceback.
"""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ToolError

from hosts.access import ClientAccess, access_for, visible_hosts
from hosts.inventory import list_hosts
from hosts.models import Host
from sshcontrol.caller import Caller
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.mcp.schemas import HostInfo, HostList
from sshcontrol.models import SshSession


def host_list(caller: Caller, tag: str | None = None, search: str | None = None) -> HostList:
    """What ``ssh_list_hosts`` returns to ``caller``. Raises ``ToolError`` if the database stays away."""
    if caller.client_id is None:
        raise ToolError("this call needs an MCP client identity")
    client_id = caller.client_id
    try:
        return retrying(lambda: _read(client_id, tag, search), "listing the hosts")
    except DatabaseUnavailable as exc:
        raise ToolError(str(exc)) from None


def _read(client_id: int, tag: str | None, search: str | None) -> HostList:
    access = access_for(client_id)
    hosts = visible_hosts(access, list_hosts(tag=tag, search=search))
    open_by_host: dict[int, list[str]] = {}
    for session_id, host_id in (
        SshSession.objects.connected()
        .filter(client_id=client_id, host__in=hosts)
        .values_list("session_id", "host_id")
    ):
        open_by_host.setdefault(host_id, []).append(session_id)
    infos = [
        HostInfo(
            name=h.name,
            address=h.address,
            port=h.port,
            username=h.username,
            tags=[str(t) for t in h.tags or []],
            description=h.description,
            host_key_state=h.key_state,
            open_sessions=open_by_host.get(h.pk, []),
        )
        for h in hosts
    ]
    note = "" if infos else empty_reason(access, filtered=bool(tag or search))
    return HostList(hosts=infos, count=len(infos), note=note)


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
