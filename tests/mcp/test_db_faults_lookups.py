"""Lookups outside a host call through database faults (PostgreSQL): the HTTP bearer-token and
OAuth client checks and ``ssh_list_hosts`` ride out killed connections, and fail clearly (503
with a JSON error; a tool error) when the database stays away past the retry bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from hosts.clients import create_client
from tests.dbfaults import refusing_connections, terminate_backends
from tests.mcp.conftest import McpHarness
from tests.mcp.test_http import RunningServer, bearer, post, start_server, stop_server
from tests.mcp.test_oauth import start_oauth_server
from tests.oidc.idp import Idp, available, rsa_key

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL fault test (DATABASE_URL=postgres://...)")


@pytest.fixture
def http_server(postgres: None, tmp_path: Path) -> Iterator[RunningServer]:
    proc, running = start_server(tmp_path, "--no-admin", SSHCONTROL_DB_RETRY_SECONDS="1")
    yield running
    stop_server(proc, running)


def test_the_token_check_rides_out_killed_connections_and_answers_503_while_the_database_is_down(
    http_server: RunningServer,
) -> None:
    token = create_client("ci-bot").token
    assert post(http_server, authorization=bearer(token)["authorization"]).status_code == 200
    assert terminate_backends() > 0, "the server held no connection: the fault proved nothing"
    assert post(http_server, authorization=bearer(token)["authorization"]).status_code == 200
    with refusing_connections():
        down = post(http_server, authorization=bearer(token)["authorization"])
    assert_503(down, "checking a client token")
    assert token not in down.text
    # Back: the same token is good again (it was never refused as invalid).
    assert post(http_server, authorization=bearer(token)["authorization"]).status_code == 200


def assert_503(response: Any, what: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json" and response.headers["retry-after"]
    body = response.json()
    assert body["error"] == "database_unavailable" and what in body["error_description"], body


@pytest.mark.skipif(bool(available()), reason=available() or "ok")
def test_the_oauth_client_check_rides_out_killed_connections_and_answers_503_while_the_database_is_down(
    postgres: None, tmp_path: Path
) -> None:
    idp = Idp(tmp_path)
    idp.start([rsa_key("key-a")])
    try:
        proc, server = start_oauth_server(tmp_path, idp, SSHCONTROL_DB_RETRY_SECONDS="1")
        try:
            idp.set_account("bot2", email="bot2@example.com")
            token = idp.client_credentials("bot2", resource=server.mcp)
            assert post(server, authorization=f"Bearer {token}").status_code == 200
            assert terminate_backends() > 0, "the server held no connection: the fault proved nothing"
            assert post(server, authorization=f"Bearer {token}").status_code == 200
            with refusing_connections():
                assert_503(post(server, authorization=f"Bearer {token}"), "binding an OAuth identity")
            assert post(server, authorization=f"Bearer {token}").status_code == 200
        finally:
            stop_server(proc, server)
    finally:
        idp.stop()


def test_the_host_list_rides_out_killed_connections(postgres: None, mcp: McpHarness, make_host: Any) -> None:
    make_host("h1")
    assert [h["name"] for h in mcp.ok("ssh_list_hosts", response_format="json")["hosts"]] == ["h1"]
    terminate_backends()  # the server's call threads' connections among them
    connection.close()  # and this thread's, which Django would not notice before the teardown
    assert [h["name"] for h in mcp.ok("ssh_list_hosts", response_format="json")["hosts"]] == ["h1"]


def test_the_host_list_fails_clearly_while_the_database_is_down(
    postgres: None, mcp: McpHarness, make_host: Any, settings: Any
) -> None:
    make_host("h1")
    mcp.ok("ssh_list_hosts")
    settings.DB_RETRY_SECONDS = 0.5
    with refusing_connections():
        message = mcp.error("ssh_list_hosts")
    assert "the database is unavailable: listing your hosts failed" in message, message
