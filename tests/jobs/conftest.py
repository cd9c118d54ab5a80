"""The MCP harness fixtures of tests/mcp, and the real-mcp_serve fixtures of its stdio tests."""

from tests.mcp.conftest import McpHarness, as_client, mcp
from tests.mcp.test_stdio import anyio_backend, env, registered

__all__ = ["McpHarness", "anyio_backend", "as_client", "env", "mcp", "registered"]
