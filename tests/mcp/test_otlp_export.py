"""docs/operations.md's OpenTelemetry recipe, as written: spans reach an OTLP receiver with the audit id.

``mcp_serve --transport streamable-http`` runs under ``opentelemetry-instrument`` (the ``otel``
extra) with the standard ``OTEL_*`` variables, pointed at an OTLP/HTTP receiver this test
runs; a real ``ssh_execute`` must arrive there as a ``tools/call ssh_execute`` span carrying
``sshcontrol.audit_id``.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hosts.models import Grant
from tests.mcp.test_http import RunningServer, issue, mcp_client
from tests.polling import wait_until
from tests.server_process import launch, server_env
from tests.sshd import free_port


class Receiver(ThreadingHTTPServer):
    """The OTLP/HTTP trace endpoint: keeps every export request it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver.requests.append(request)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def audit_ids_of(self, span_name: str) -> list[int]:
        found = []
        for request in list(self.requests):
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        if span.name == span_name:
                            found += [
                                a.value.int_value for a in span.attributes if a.key == "sshcontrol.audit_id"
                            ]
        return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def instrumented(transactional_db: None, receiver: Receiver, tmp_path: Path) -> Iterator[RunningServer]:
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument, "opentelemetry-instrument is missing: install the 'otel' extra (the test extra has it)"
    port = free_port()
    env = server_env(
        tmp_path,
        SSHCONTROL_LOG_LEVEL="WARNING",
        # The recipe of docs/operations.md, with a short export delay so the test need not wait.
        OTEL_SERVICE_NAME="sshcontrol",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_port}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    log = tmp_path / "server.log"
    proc = launch(
        [
            *(instrument, sys.executable, "-m", "sshcontrol", "mcp_serve"),
            *("--transport", "streamable-http"),
            *("--bind", f"127.0.0.1:{port}", "--no-create-admin"),
        ],
        env,
        log,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", log)
    try:

        def answering() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                httpx2.get(f"{server.url}/healthz", timeout=1)
            except httpx2.TransportError:
                return False
            return True

        try:
            wait_until(answering, 60, "the server did not answer /healthz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{log.read_text()}") from None
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_it_exports_the_tool_call_span_with_the_audit_id(
    instrumented: RunningServer, receiver: Receiver, make_host: Any
) -> None:
    web = make_host("traced-web")
    issued = issue("traced-agent")
    Grant.objects.create(client=issued.client).hosts.set([web])

    async def call() -> int:
        async with mcp_client(instrumented, issued.token) as client:
            result = await client.call_tool("ssh_execute", {"host": "traced-web", "command": "true"})
            assert not result.is_error and result.structured_content is not None, result.content
            audit_id: int = result.structured_content["audit_id"]
            return audit_id

    audit_id = anyio.run(call)
    wait_until(
        lambda: audit_id in receiver.audit_ids_of("tools/call ssh_execute"),
        30,
        f"no span with audit id {audit_id} reached the receiver",
    )
