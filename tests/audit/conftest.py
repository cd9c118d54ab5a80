"""Audit tests that make real MCP calls use the MCP harness's client fixture."""

from tests.mcp.conftest import as_client  # noqa: F401  (a fixture, used by name)
