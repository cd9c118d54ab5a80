"""sshcontrol as an OAuth 2.1 resource server, against a real OpenID provider on loopback.

The provider is the npm package ``oidc-provider`` run by ``tests/oidc/provider.mjs``; the
server is a real ``mcp_serve --transport streamable-http`` process (as in ``test_http``)
configured with that issuer. Tokens come from the provider's real token endpoint, obtained
by the MCP SDK's own OAuth clients (client credentials; authorization code with PKCE) or
by plain token requests; forged tokens are made here with PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.types import CallToolResult

from audit import chain
from audit.models import AuditEvent
from hosts.access_models import ClientGroup, Grant, McpClient
from hosts.models import Host
from tests.leaks import recoverable
from tests.mcp.test_http import (
    INITIALIZE,
    ISSUED,
    MCP_HEADERS,
    RunningServer,
    issue,
    start_server,
    stop_server,
)
from tests.mcp.test_secrets_at_rest import columns_holding, in_the_database_file
from tests.oidc.idp import REDIRECT_URI, Idp, available, ec_key, rsa_key
from tests.polling import wait_until
from tests.sshd import free_port

pytestmark = pytest.mark.skipif(bool(available()), reason=available() or "ok")

SCOPE = "mcp:tools"


@dataclass
class OAuthServer:
    idp: Idp
    server: RunningServer

    @property
    def resource(self) -> str:
        return self.server.mcp


def start_oauth_server(tmp: Path, idp: Idp, **env: str) -> tuple[Any, RunningServer]:
    port = free_port()
    return start_server(
        tmp,
        port=port,
        **{
            "SSHCONTROL_OAUTH_ISSUER": idp.issuer,
            "SSHCONTROL_OAUTH_RESOURCE": f"http://127.0.0.1:{port}/mcp",
            "SSHCONTROL_OAUTH_SCOPES": SCOPE,
            "SSHCONTROL_OAUTH_JWKS_MIN_REFRESH_SECONDS": "1",
            **env,
        },
    )


@pytest.fixture(scope="module")
def signing_keys() -> list[dict[str, Any]]:
    return [rsa_key("key-a"), ec_key("key-e")]


@pytest.fixture(scope="module")
def oauth(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory, signing_keys: list[dict[str, Any]]
) -> Iterator[OAuthServer]:
    tmp = tmp_path_factory.mktemp("oauth")
    idp = Idp(tmp)
    idp.start(signing_keys)
    try:
        # DEBUG: the accepted tokens are looked for in everything the server would ever log.
        proc, server = start_oauth_server(tmp, idp, SSHCONTROL_LOG_LEVEL="DEBUG")
        yield OAuthServer(idp, server)
        stop_server(proc, server)
    finally:
        idp.stop()  # also when the server did not start: no provider is left running


def post(url: str, token: str | None = None, body: Any = INITIALIZE) -> httpx2.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx2.post(url, content=json.dumps(body).encode(), headers=headers, timeout=30)


def assert_401_with_metadata(response: httpx2.Response, oauth: OAuthServer) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{metadata_url(oauth)}"' in challenge


def metadata_url(oauth: OAuthServer) -> str:
    return f"{oauth.server.url}/.well-known/oauth-protected-resource/mcp"


def make_host(name: str) -> Host:
    return Host.objects.create(name=name, address="127.0.0.1", port=22, username="nobody")


def group_grant(group: str, *hosts: Host, **flags: bool) -> Grant:
    made = Grant.objects.create(group=ClientGroup.objects.get_or_create(name=group)[0], **flags)
    made.hosts.set(hosts)
    return made


async def host_names(client: Client) -> list[str]:
    result = await client.call_tool("ssh_list_hosts", {"response_format": "json"})
    assert isinstance(result, CallToolResult) and not result.is_error, result.content
    assert result.structured_content is not None
    return [h["name"] for h in result.structured_content["hosts"]]


@asynccontextmanager
async def bearer_client(oauth: OAuthServer, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(oauth.server.mcp, http_client=http)) as client,
    ):
        yield client


def names_with(oauth: OAuthServer, token: str) -> list[str]:
    async def run() -> list[str]:
        async with bearer_client(oauth, token) as client:
            return await host_names(client)

    return anyio.run(run)


class MemoryStorage:
    """The SDK client's ``TokenStorage``, in memory, optionally with a pre-registered client."""

    def __init__(self, client_info: OAuthClientInformationFull | None = None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def accepted_token(storage: MemoryStorage) -> str:
    """The access token the SDK client got and sent; the server's log is checked for it when it stops."""
    assert storage.tokens is not None
    token = storage.tokens.access_token
    ISSUED.append(token)
    return token


def assert_kept_nowhere(oauth: OAuthServer, token: str, subject: str) -> None:
    """The accepted token is in no log line and no column of any table (its signature alone neither)."""
    # Control: the scan reads what the server committed for this caller.
    assert "hosts_mcpclient.oauth_subject" in columns_holding(subject)
    pieces = [token]
    if token.count(".") == 2:  # a JWT: its signature is the part no other token shares
        pieces.append(token.rsplit(".", 1)[1])
    log = oauth.server.log.read_bytes()
    for piece in pieces:
        assert not recoverable(piece, log), "the token is in the server's log"
        assert columns_holding(piece) == [], "the token is stored in the database"
        assert not in_the_database_file(piece), "the token is in the database file"


# -- metadata and challenges ------------------------------------------------------------------


def test_it_publishes_protected_resource_metadata_for_mcp(oauth: OAuthServer) -> None:
    response = httpx2.get(metadata_url(oauth))
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == oauth.resource
    # The issuer exactly as configured and as the provider publishes it (no added slash).
    assert document["authorization_servers"] == [oauth.idp.issuer]
    assert document["scopes_supported"] == [SCOPE]


def test_it_answers_401_with_the_metadata_url_without_a_token(oauth: OAuthServer) -> None:
    assert_401_with_metadata(post(oauth.server.mcp), oauth)


# -- flows through the SDK's OAuth clients ------------------------------------------------------


def test_it_runs_tools_for_a_client_credentials_token_from_the_sdk_client(
    oauth: OAuthServer, transactional_db: None
) -> None:
    web = make_host("cc-web")
    make_host("cc-other")
    group_grant("sre-team", web)
    oauth.idp.set_account("bot", email="bot@example.com", groups=["SRE Team", "unknown-group"])
    storage = MemoryStorage()
    auth = ClientCredentialsOAuthProvider(
        server_url=oauth.server.mcp,
        storage=storage,
        client_id="bot",
        client_secret="bot-secret",
        scope=SCOPE,
        issuer=oauth.idp.issuer,
    )

    async def run() -> tuple[list[str], CallToolResult]:
        async with (
            httpx2.AsyncClient(auth=auth, timeout=60) as http,
            Client(streamable_http_client(oauth.server.mcp, http_client=http)) as client,
        ):
            names = await host_names(client)
            denied = await client.call_tool("ssh_execute", {"host": "cc-other", "command": "true"})
            return names, denied

    names, denied = anyio.run(run)
    assert names == ["cc-web"]
    assert denied.is_error
    client = McpClient.objects.get(oauth_issuer=oauth.idp.issuer, oauth_subject="bot")
    assert client.name == "bot-example-com" and client.owner == "bot@example.com"
    # Groups come from the token, matched by slug; groups nobody created are ignored.
    assert [g.name for g in client.groups.all()] == ["sre-team"]
    assert not ClientGroup.objects.filter(name="unknown-group").exists()
    event = AuditEvent.objects.filter(client=client.name, tool="ssh_execute").get()
    assert event.status == AuditEvent.Status.DENIED
    assert (event.oauth_issuer, event.oauth_subject) == (oauth.idp.issuer, "bot")
    # The hash chain covers who called: changing the recorded subject breaks it.
    assert chain.verify().ok
    AuditEvent.objects.filter(pk=event.pk).update(oauth_subject="somebody-else")
    assert not chain.verify().ok
    assert_kept_nowhere(oauth, accepted_token(storage), "bot")


def authorize_in_browser(authorization_url: str) -> AuthorizationCodeResult:
    """Do what the user's browser does: follow the provider's redirects until the client's redirect URI."""
    with httpx2.Client(follow_redirects=False, timeout=30) as browser:
        url = authorization_url
        for _ in range(20):
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text[:2000])
            url = urljoin(url, response.headers["location"])
            if url.startswith(REDIRECT_URI):
                query = parse_qs(urlsplit(url).query)
                assert "code" in query, query
                first = {k: v[0] for k, v in query.items()}
                return AuthorizationCodeResult(
                    code=first["code"], state=first.get("state"), iss=first.get("iss")
                )
    raise AssertionError("the authorization did not come back to the redirect URI")


def test_it_runs_tools_after_an_authorization_code_flow_with_pkce(
    oauth: OAuthServer, transactional_db: None
) -> None:
    web = make_host("ac-web")
    group_grant("ops", web)
    oauth.idp.set_account("alice-sub", email="alice@example.com", groups=["ops"])
    oauth.idp.login_as("alice-sub")
    received: list[str] = []

    async def redirect(url: str) -> None:
        received.append(url)

    async def callback() -> AuthorizationCodeResult:
        return await anyio.to_thread.run_sync(authorize_in_browser, received[-1])

    metadata = OAuthClientMetadata(
        redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=SCOPE,
    )
    registered = OAuthClientInformationFull(client_id="agent", **metadata.model_dump(exclude_none=True))
    storage = MemoryStorage(registered)
    auth = OAuthClientProvider(
        server_url=oauth.server.mcp,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=redirect,
        callback_handler=callback,
    )

    async def run() -> list[str]:
        async with (
            httpx2.AsyncClient(auth=auth, timeout=60) as http,
            Client(streamable_http_client(oauth.server.mcp, http_client=http)) as client,
        ):
            return await host_names(client)

    assert anyio.run(run) == ["ac-web"]
    params = parse_qs(urlsplit(received[0]).query)
    assert params["code_challenge_method"] == ["S256"] and params["resource"] == [oauth.resource]
    client = McpClient.objects.get(oauth_subject="alice-sub")
    assert client.name == "alice-example-com"
    assert_kept_nowhere(oauth, accepted_token(storage), "alice-sub")


# -- refusals ----------------------------------------------------------------------------------


def test_it_refuses_a_token_for_another_audience(oauth: OAuthServer) -> None:
    token = oauth.idp.client_credentials(resource="http://127.0.0.1:1/some-other-api")
    assert_401_with_metadata(post(oauth.server.mcp, token), oauth)


def test_it_refuses_a_token_of_another_issuer_signed_with_a_trusted_key(
    oauth: OAuthServer, signing_keys: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Same keys, another issuer: only the issuer check can catch it.
    impostor = Idp(tmp_path)
    impostor.start(signing_keys)
    try:
        token = impostor.client_credentials(resource=oauth.resource)
    finally:
        impostor.stop()
    assert jwt.get_unverified_header(token)["kid"] == "key-a"
    assert_401_with_metadata(post(oauth.server.mcp, token), oauth)


def test_it_refuses_an_expired_token(oauth: OAuthServer, transactional_db: None) -> None:
    token = oauth.idp.client_credentials("short", resource=oauth.resource)
    assert post(oauth.server.mcp, token).status_code == 200
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    wait_until(lambda: time.time() > expires + 1, 30, "the token did not expire")
    assert_401_with_metadata(post(oauth.server.mcp, token), oauth)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(signature)


def test_it_refuses_wrongly_signed_tokens(oauth: OAuthServer, signing_keys: list[dict[str, Any]]) -> None:
    genuine = oauth.idp.client_credentials(resource=oauth.resource)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    rsa_public_pem = (
        jwt.PyJWK(signing_keys[0])
        .key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_header = {"alg": "HS256", "typ": "at+jwt", "kid": "key-a"}
    unsigned = forged(hs_header, claims)
    hs_signature = hmac.new(rsa_public_pem, unsigned.rsplit(".", 1)[0].encode(), hashlib.sha256).digest()
    stranger = rsa_key("key-a")  # a key of our own, claiming the provider's kid
    unknown = rsa_key("key-unknown")
    attempts = {
        "alg none": forged({"alg": "none", "typ": "at+jwt", "kid": "key-a"}, claims),
        "HS256 with the public key": forged(hs_header, claims, hs_signature),
        "unknown kid": jwt.encode(claims, jwt.PyJWK(unknown).key, "RS256", headers={"kid": "key-unknown"}),
        "known kid, other key": jwt.encode(
            claims, jwt.PyJWK(stranger).key, "RS256", headers={"kid": "key-a"}
        ),
        "tampered claims": genuine.split(".")[0]
        + "."
        + b64(json.dumps({**claims, "sub": "admin"}).encode())
        + "."
        + genuine.split(".")[2],
        "malformed": "eyJhbGciOiJSUzI1NiJ9.not-json.x",
        "not a JWT, no introspection": "opaque-token-value",
    }
    assert post(oauth.server.mcp, genuine).status_code == 200
    for what, token in attempts.items():
        response = post(oauth.server.mcp, token)
        assert response.status_code == 401, what
        assert "resource_metadata=" in response.headers["www-authenticate"], what


def test_it_answers_403_insufficient_scope_without_the_required_scope(oauth: OAuthServer) -> None:
    token = oauth.idp.client_credentials(resource=oauth.resource, scope="mcp:read")
    response = post(oauth.server.mcp, token)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_it_keeps_static_tokens_working_without_oauth_scopes(
    oauth: OAuthServer, transactional_db: None
) -> None:
    issued = issue("static-beside-oauth")
    grant = Grant.objects.create(client=issued.client)
    grant.hosts.set([make_host("static-web")])
    assert names_with(oauth, issued.token) == ["static-web"]


def test_it_refuses_a_disabled_idp_client_even_with_a_valid_token(
    oauth: OAuthServer, transactional_db: None
) -> None:
    oauth.idp.set_account("bot2", email="bot2@example.com")
    token = oauth.idp.client_credentials("bot2", resource=oauth.resource)
    assert post(oauth.server.mcp, token).status_code == 200
    McpClient.objects.filter(oauth_subject="bot2").update(enabled=False)
    assert_401_with_metadata(post(oauth.server.mcp, token), oauth)


def test_it_follows_the_idp_groups_at_the_next_request(oauth: OAuthServer, transactional_db: None) -> None:
    group_grant("dba", make_host("db1"))
    oauth.idp.set_account("bot2", email="bot2@example.com", groups=["dba"])
    assert names_with(oauth, oauth.idp.client_credentials("bot2", resource=oauth.resource)) == ["db1"]
    oauth.idp.set_account("bot2", email="bot2@example.com", groups=[])
    assert names_with(oauth, oauth.idp.client_credentials("bot2", resource=oauth.resource)) == []
    assert not McpClient.objects.get(oauth_subject="bot2").groups.exists()


def test_it_accepts_a_rotated_key_and_drops_a_removed_one(
    django_db_setup: None, tmp_path: Path, transactional_db: None
) -> None:
    old, new, newer = rsa_key("old"), ec_key("new"), rsa_key("newer")
    idp = Idp(tmp_path)
    idp.start([old])
    try:
        proc, server = start_oauth_server(tmp_path, idp)
    except BaseException:
        idp.stop()
        raise
    try:
        rotating = OAuthServer(idp, server)
        old_token = idp.client_credentials(resource=rotating.resource)
        assert post(server.mcp, old_token).status_code == 200
        # The provider publishes a new key next to the old one and signs with it.
        idp.restart([old, new], sign_kid="new")
        new_token = idp.client_credentials(resource=rotating.resource)
        assert jwt.get_unverified_header(new_token)["kid"] == "new"
        wait_until(lambda: post(server.mcp, new_token).status_code == 200, 60, "the rotated key was refused")
        assert post(server.mcp, old_token).status_code == 200
        # Then it drops the old key; once a token of the next key is in use, the old key is gone.
        idp.restart([new, newer], sign_kid="newer")
        newer_token = idp.client_credentials(resource=rotating.resource)
        wait_until(lambda: post(server.mcp, newer_token).status_code == 200, 60, "the next key was refused")
        assert_401_with_metadata(post(server.mcp, old_token), rotating)
        assert post(server.mcp, new_token).status_code == 200
    finally:
        stop_server(proc, server)
        idp.stop()


def test_it_never_logs_a_token(oauth: OAuthServer) -> None:
    token = oauth.idp.client_credentials(resource="http://127.0.0.1:1/other")
    post(oauth.server.mcp, token)
    ISSUED.append(token)  # stop_server checks the log for every issued token
    assert token not in oauth.server.log.read_text()


def tool_names_with(oauth: OAuthServer, token: str) -> dict[str, set[str]]:
    """Each listed tool with its argument names, as this caller sees them."""

    async def run() -> dict[str, set[str]]:
        async with bearer_client(oauth, token) as client:
            listed = (await client.list_tools()).tools
            return {t.name: set(t.input_schema["properties"]) for t in listed}

    return anyio.run(run)


def test_it_lists_different_tools_to_different_callers(oauth: OAuthServer, transactional_db: None) -> None:
    web = make_host("tl-web")
    group_grant("deployers", web, can_write_files=True, can_sudo=True)
    viewer = issue("tl-viewer")
    Grant.objects.create(client=viewer.client, can_execute=False, can_read_files=False).hosts.set([web])
    oauth.idp.set_account("bot", email="bot@example.com", groups=["deployers"])
    deployer = tool_names_with(oauth, oauth.idp.client_credentials(resource=oauth.resource))
    assert "ssh_upload_file" in deployer and "sudo" in deployer["ssh_execute"]
    assert set(tool_names_with(oauth, viewer.token)) == {"ssh_list_hosts", "ssh_status"}
    # Out of the group at the IdP: the next token's caller is offered only the listing tools.
    oauth.idp.set_account("bot", email="bot@example.com", groups=[])
    token = oauth.idp.client_credentials(resource=oauth.resource)
    assert set(tool_names_with(oauth, token)) == {"ssh_list_hosts", "ssh_status"}

    async def hidden_call() -> CallToolResult:
        async with bearer_client(oauth, token) as client:
            return await client.call_tool(
                "ssh_upload_file", {"host": "tl-web", "remote_path": "x", "content": "x"}
            )

    refused = anyio.run(hidden_call)
    assert refused.is_error
    event = AuditEvent.objects.filter(tool="ssh_upload_file", client="bot-example-com").get()
    assert (event.status, event.oauth_subject) == (AuditEvent.Status.DENIED, "bot")


def test_it_accepts_opaque_tokens_through_introspection(
    django_db_setup: None, tmp_path: Path, transactional_db: None
) -> None:
    idp = Idp(tmp_path, opaque=True)
    idp.start([rsa_key()])
    secret = tmp_path / "introspection-secret"
    secret.write_text("introspect-secret\n")
    try:
        proc, server = start_oauth_server(
            tmp_path,
            idp,
            SSHCONTROL_OAUTH_INTROSPECTION_URL=f"{idp.issuer}/token/introspection",
            SSHCONTROL_OAUTH_CLIENT_ID="sshcontrol",
            SSHCONTROL_OAUTH_CLIENT_SECRET_FILE=str(secret),
        )
    except BaseException:
        idp.stop()
        raise
    try:
        opaque = OAuthServer(idp, server)
        group_grant("ops", make_host("op-web"))
        idp.set_account("bot", email="bot@example.com", groups=["ops"])
        token = idp.client_credentials(resource=opaque.resource)
        assert token.count(".") == 0  # not a JWT: only introspection can tell what it is
        assert names_with(opaque, token) == ["op-web"]
        assert McpClient.objects.get(oauth_subject="bot").oauth_issuer == idp.issuer
        assert_401_with_metadata(
            post(server.mcp, idp.client_credentials(resource="http://127.0.0.1:1/x")), opaque
        )
        assert_401_with_metadata(post(server.mcp, "made-up-opaque-token"), opaque)
        ISSUED.append(token)
    finally:
        stop_server(proc, server)
        idp.stop()


def test_it_completes_the_flow_with_the_typescript_sdk(oauth: OAuthServer, transactional_db: None) -> None:
    """Another implementation of the MCP authorization flow: discovery from the 401 and the metadata."""
    group_grant("ts-team", make_host("ts-web"))
    oauth.idp.set_account("bot2", email="bot2@example.com", groups=["ts-team"])
    script = Path(__file__).resolve().parents[1] / "oidc" / "ts_client.mjs"
    done = subprocess.run(
        ["node", str(script), oauth.server.mcp, oauth.idp.issuer, "bot2", "bot2-secret", SCOPE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=script.parent,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_NO_WARNINGS": "1"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["hosts"] == ["ts-web"]
    assert "ssh_execute" in result["tools"] and "ssh_upload_file" not in result["tools"]
    assert McpClient.objects.get(oauth_subject="bot2").name == "bot2-example-com"
