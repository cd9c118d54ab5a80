"""The MCP harness fixtures of tests/mcp, for the job tests."""

from tests.mcp.conftest import McpHarness, as_client, mcp

__all__ = ["McpHarness", "as_client", "mcp"]
