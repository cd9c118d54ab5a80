"""The MCP SDK's OpenTelemetry span of a tool call carries the call's audit id."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.mcp.conftest import McpHarness

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """A process-wide tracer provider (OpenTelemetry allows one), recording spans in memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    return _exporter


def test_it_puts_the_audit_id_on_the_tool_call_span(
    spans: InMemorySpanExporter, mcp: McpHarness, make_host
) -> None:
    make_host("traced")
    spans.clear()
    audit_id = mcp.ok("ssh_execute", host="traced", command="true")["audit_id"]
    calls = [s for s in spans.get_finished_spans() if s.name == "tools/call ssh_execute"]
    assert len(calls) == 1
    attributes = calls[0].attributes or {}
    assert attributes.get("sshcontrol.audit_id") == audit_id
    assert attributes.get("gen_ai.tool.name") == "ssh_execute"
