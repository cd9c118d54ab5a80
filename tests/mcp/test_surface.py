"""What the server advertises and describes: capabilities in both protocol eras, tool descriptions.

Driven through the SDK's own client in the default (2026, ``server/discover``) mode and in
``mode="legacy"`` (the ``initialize`` handshake), against the server ``mcp_serve`` builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import METHOD_NOT_FOUND, ServerCapabilities

from sshcontrol.mcp.identity import process_client
from sshcontrol.mcp.server import build_server
from tests.mcp.conftest import McpHarness

MODES = ["auto", "legacy"]


def talk(mode: str, body: Any) -> Any:
    server = build_server(transport="memory", client=process_client())

    async def main() -> Any:
        async with Client(server, mode=mode) as client:
            return await body(client)

    return asyncio.run(main())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", MODES)
def test_it_advertises_only_tools_whose_list_never_changes(mode: str) -> None:
    async def body(client: Client) -> ServerCapabilities:
        return client.server_capabilities

    capabilities = talk(mode, body)
    assert capabilities.tools is not None and not capabilities.tools.list_changed
    assert (capabilities.prompts, capabilities.resources, capabilities.completions) == (None, None, None)
    assert capabilities.logging is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", MODES)
def test_it_answers_prompt_and_resource_requests_with_method_not_found(mode: str) -> None:
    async def body(client: Client) -> list[int]:
        codes = []
        for request in (client.list_prompts(), client.get_prompt("anything"), client.list_resources()):
            with pytest.raises(MCPError) as caught:
                await request
            codes.append(caught.value.error.code)
        return codes

    assert talk(mode, body) == [METHOD_NOT_FOUND] * 3


@pytest.mark.django_db(transaction=True)
def test_it_gives_every_tool_a_short_clean_description() -> None:
    async def body(client: Client) -> dict[str, str]:
        return {tool.name: tool.description or "" for tool in (await client.list_tools()).tools}

    descriptions = talk("auto", body)
    assert len(descriptions) == 19  # ten single-host and fleet, two fleet transfers, five jobs, two copies
    for name, text in descriptions.items():
        assert text and "\n" not in text and "  " not in text, (name, text)
        assert len(text) <= 400, (name, len(text))


def test_it_says_a_grant_is_missing_when_hosts_exist(as_client: Callable[..., McpHarness], make_host) -> None:
    nobody = as_client("nobody", grant=False)
    listed = nobody.ok("ssh_list_hosts")
    assert listed["hosts"] == [] and listed["note"].startswith("No hosts are registered yet")
    make_host("web1", tags=["web"])
    listed = nobody.ok("ssh_list_hosts")
    assert listed["note"] == (
        "Hosts are registered, but client 'nobody' has no grant yet; ask an administrator for one."
    )
    assert listed["note"] in nobody.text("ssh_list_hosts")
    elsewhere = as_client("elsewhere", tags=["db"])
    assert "No grant of client 'elsewhere' covers a registered host" in elsewhere.text("ssh_list_hosts")
    web = as_client("web", tags=["web"])
    assert web.ok("ssh_list_hosts", tag="db")["note"] == "No host you may use matches this tag or search."
    assert web.ok("ssh_list_hosts")["note"] == ""
