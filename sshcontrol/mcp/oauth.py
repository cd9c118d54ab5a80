"""sshcontrol as an OAuth 2.1 resource server: access tokens from the company's identity provider.

With ``SSHCONTROL_OAUTH_ISSUER`` set, ``/mcp`` accepts, beside the admin's static ``sshc_``
tokens, access tokens that issuer made for ``SSHCONTROL_OAUTH_RESOURCE`` (the canonical URL of
``/mcp``, RFC 8707):

- JWT access tokens are verified with PyJWT against the issuer's published keys (JWKS, found
  through OpenID Connect or RFC 8414 discovery). Only the asymmetric algorithms in
  ``SSHCONTROL_OAUTH_ALGORITHMS`` are accepted (never ``none``, never HMAC, so a token "signed"
  with the public key as an HMAC secret is refused); the key must be in the set under the
  token's ``kid``. Issuer (exact string), audience (the resource), expiry and subject are
  required. An unknown ``kid`` refetches the key set, at most every
  ``SSHCONTROL_OAUTH_JWKS_MIN_REFRESH_SECONDS``: a rotated-in key is accepted without a
  restart, and once fetched again a key removed from the set is no longer accepted.
- Other (opaque) tokens go to the issuer's token introspection endpoint (RFC 7662) when
  ``SSHCONTROL_OAUTH_INTROSPECTION_URL`` is set, with the same issuer/audience/expiry rules.

A verified token is bound to its subject's ``McpClient`` (``hosts.idp.bind``): made on first
use, groups synced from the token, refused when the admin disabled it. Required scopes
(``SSHCONTROL_OAUTH_SCOPES``) are enforced by the SDK's middleware (403 ``insufficient_scope``);
static tokens are not OAuth tokens and are not subject to them. The token itself is never
logged, stored or passed on: the request context holds only a short digest of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jwt
from django.conf import settings
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl

from hosts.clients import TOKEN_PREFIX, ClientAuthError
from hosts.idp import Identity, bind
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.mcp import dbguard
from sshcontrol.mcp.identity import ClientAccessToken
from sshcontrol.mcp.threads import in_thread

log = logging.getLogger("sshcontrol.mcp.oauth")

# Asymmetric JWS algorithms only: the resource server holds public keys, so HMAC (where the
# "secret" would be a public key anyone has) and "none" can never be allowed.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_HTTP_TIMEOUT = 10.0
# Longer bearer values are not tokens anyone issued; they are refused before any parsing.
_MAX_TOKEN_CHARS = 16_384


class OAuthTokenAccess(ClientAccessToken):
    """A verified IdP access token, resolved to the subject's client."""

    oauth_issuer: str
    oauth_subject: str


@dataclass(frozen=True)
class OAuthConfig:
    issuer: str
    resource: str
    scopes: tuple[str, ...]
    algorithms: tuple[str, ...]
    jwks_url: str
    introspection_url: str
    client_id: str
    client_secret: str
    name_claim: str
    groups_claim: str
    create_groups: bool
    min_refresh_seconds: float
    max_age_seconds: float

    @classmethod
    def from_settings(cls) -> OAuthConfig | None:
        if not settings.OAUTH_ISSUER:
            return None
        return cls(
            issuer=settings.OAUTH_ISSUER,
            resource=settings.OAUTH_RESOURCE,
            scopes=tuple(settings.OAUTH_SCOPES),
            algorithms=tuple(a for a in settings.OAUTH_ALGORITHMS if a in SUPPORTED_ALGORITHMS),
            jwks_url=settings.OAUTH_JWKS_URL,
            introspection_url=settings.OAUTH_INTROSPECTION_URL,
            client_id=settings.OAUTH_CLIENT_ID,
            client_secret=settings.OAUTH_CLIENT_SECRET,
            name_claim=settings.OAUTH_NAME_CLAIM,
            groups_claim=settings.OAUTH_GROUPS_CLAIM,
            create_groups=settings.OAUTH_CREATE_GROUPS,
            min_refresh_seconds=settings.OAUTH_JWKS_MIN_REFRESH_SECONDS,
            max_age_seconds=settings.OAUTH_JWKS_MAX_AGE_SECONDS,
        )


# -- configuration checks ----------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(name: str, url: str) -> str:
    """Why ``url`` is not an acceptable https URL ("" when it is); plain http only on loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} is not an http(s) URL: {url!r}"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return f"{name} must be https (plain http only on a loopback address): {url!r}"
    if parts.fragment or parts.query:
        return f"{name} must not have a query or fragment: {url!r}"
    return ""


def config_problems() -> list[str]:
    """Configuration mistakes, for ``manage.py check`` (sshcontrol.E064)."""
    if not settings.OAUTH_ISSUER:
        stray = [
            n
            for n, v in (
                ("SSHCONTROL_OAUTH_RESOURCE", settings.OAUTH_RESOURCE),
                ("SSHCONTROL_OAUTH_INTROSPECTION_URL", settings.OAUTH_INTROSPECTION_URL),
            )
            if v
        ]
        return [f"{n} is set but SSHCONTROL_OAUTH_ISSUER is not" for n in stray]
    problems = [url_problem("SSHCONTROL_OAUTH_ISSUER", settings.OAUTH_ISSUER)]
    if not settings.OAUTH_RESOURCE:
        problems.append("SSHCONTROL_OAUTH_RESOURCE (the canonical URL of /mcp, the audience) is required")
    else:
        problems.append(url_problem("SSHCONTROL_OAUTH_RESOURCE", settings.OAUTH_RESOURCE))
    for name, url in (
        ("SSHCONTROL_OAUTH_JWKS_URL", settings.OAUTH_JWKS_URL),
        ("SSHCONTROL_OAUTH_INTROSPECTION_URL", settings.OAUTH_INTROSPECTION_URL),
    ):
        if url:
            problems.append(url_problem(name, url))
    bad = [a for a in settings.OAUTH_ALGORITHMS if a not in SUPPORTED_ALGORITHMS]
    if bad or not settings.OAUTH_ALGORITHMS:
        problems.append(
            f"SSHCONTROL_OAUTH_ALGORITHMS may name only {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            f" (got {', '.join(bad) or 'none'})"
        )
    if settings.OAUTH_INTROSPECTION_URL and not (settings.OAUTH_CLIENT_ID and settings.OAUTH_CLIENT_SECRET):
        problems.append(
            "SSHCONTROL_OAUTH_INTROSPECTION_URL needs SSHCONTROL_OAUTH_CLIENT_ID and "
            "SSHCONTROL_OAUTH_CLIENT_SECRET (or _FILE)"
        )
    return [p for p in problems if p]


# -- the issuer's keys -------------------------------------------------------------------------


def _signing_keys(document: Any) -> dict[str | None, list[tuple[jwt.PyJWK, str | None]]]:
    """The usable public signing keys of a JWKS document, by ``kid``, with their declared ``alg``.

    Symmetric (``oct``) keys and keys for encryption are dropped: a resource server never
    verifies with a shared secret it got from a URL.
    """
    keys: dict[str | None, list[tuple[jwt.PyJWK, str | None]]] = {}
    entries = document.get("keys") if isinstance(document, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(dict(entry))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        alg = entry.get("alg")
        kid = entry.get("kid")
        keys.setdefault(str(kid) if kid is not None else None, []).append(
            (key, str(alg) if alg is not None else None)
        )
    return keys


class KeySet:
    """The issuer's JWKS, cached, refetched when old or when a token names an unknown key.

    One fetch at a time (an asyncio lock); an unknown ``kid`` triggers a fetch at most every
    ``min_refresh`` seconds, so a flood of made-up key ids costs one request to the IdP per
    interval. A failed fetch keeps the keys already known.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Any]],
        min_refresh: float,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._min_refresh = min_refresh
        self._max_age = max_age
        self._clock = clock
        self._keys: dict[str | None, list[tuple[jwt.PyJWK, str | None]]] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()

    async def _refresh(self, since: float) -> None:
        async with self._lock:
            if self._tried_at is not None and self._tried_at >= since:
                return  # another request fetched while this one waited for the lock
            self._tried_at = self._clock()
            try:
                document = await self._fetch()
            except Exception as exc:  # the IdP down or answering nonsense: keep what we know
                log.warning("could not fetch the identity provider's keys: %s", exc)
                return
            self._keys = _signing_keys(document)
            self._fetched_at = self._clock()
            log.info("fetched the identity provider's keys: %d usable", sum(map(len, self._keys.values())))

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        candidates = (
            self._keys.get(kid, []) if kid is not None else [k for ks in self._keys.values() for k in ks]
        )
        usable = [key for key, declared in candidates if declared in (None, alg)]
        # Without a kid the key must be unambiguous.
        return usable[0] if len(usable) == 1 or (kid is not None and usable) else None

    def _may_fetch(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self._min_refresh

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        started = self._clock()
        stale = self._fetched_at is None or started - self._fetched_at >= self._max_age
        if stale and self._may_fetch(started):
            await self._refresh(since=started)
        found = self._find(kid, alg)
        if found is None and self._may_fetch(self._clock()):
            await self._refresh(since=started)
            found = self._find(kid, alg)
        return found


# -- claims ------------------------------------------------------------------------------------


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (Keycloak's ``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    """RFC 9068 ``scope`` (space-separated), or ``scp`` (a list or a string: Okta, Entra ID)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [str(v) for v in value]
    return []


def groups_of(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    value = claim(claims, path)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def digest_of(token: str) -> str:
    """What the request context keeps of a token: enough to tell two apart in a debugger, no more."""
    return "oauth:" + hashlib.sha256(token.encode()).hexdigest()[:16]


# -- the verifier ------------------------------------------------------------------------------


class TokenRefused(Exception):
    """Why a bearer token is not accepted (logged; the caller only sees 401)."""


class OAuthTokenVerifier:
    """The SDK's ``TokenVerifier`` when an issuer is configured: static tokens and IdP tokens."""

    def __init__(self, config: OAuthConfig, static: TokenVerifier) -> None:
        self.config = config
        self.static = static
        self._discovery: dict[str, Any] | None = None
        self._discovery_lock = asyncio.Lock()
        self.keys = KeySet(self._fetch_jwks, config.min_refresh_seconds, config.max_age_seconds)

    # The IdP's documents ------------------------------------------------------------------

    async def _get_json(self, url: str) -> Any:
        async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False) as http:
            response = await http.get(url, headers={"accept": "application/json"})
        response.raise_for_status()
        return response.json()

    async def discovery(self) -> dict[str, Any]:
        """The issuer's metadata (OpenID Connect discovery, else RFC 8414), its ``issuer`` checked."""
        async with self._discovery_lock:
            if self._discovery is not None:
                return self._discovery
            issuer = self.config.issuer
            parts = urlsplit(issuer)
            path = parts.path.rstrip("/")
            urls = [
                issuer.rstrip("/") + "/.well-known/openid-configuration",
                f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}",
            ]
            problems = []
            for url in urls:
                try:
                    document = await self._get_json(url)
                except (httpx2.HTTPError, ValueError) as exc:
                    problems.append(f"{url}: {exc}")
                    continue
                if not isinstance(document, dict) or document.get("issuer") != issuer:
                    # RFC 8414 section 3.3: a document for another issuer must not be used.
                    problems.append(f"{url}: names issuer {document.get('issuer')!r}, not {issuer!r}")
                    continue
                self._discovery = document
                return document
            raise TokenRefused("no usable discovery document: " + "; ".join(problems))

    async def _fetch_jwks(self) -> Any:
        url = self.config.jwks_url
        if not url:
            found = (await self.discovery()).get("jwks_uri")
            if not isinstance(found, str) or url_problem("jwks_uri", found):
                raise TokenRefused(f"the issuer's jwks_uri is not a usable URL: {found!r}")
            url = found
        return await self._get_json(url)

    # Checks -------------------------------------------------------------------------------

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        """Issuer, audience, expiry, subject: for introspection answers (PyJWT checks JWTs itself)."""
        if claims.get("iss", self.config.issuer) != self.config.issuer:
            raise TokenRefused("issued by another issuer")
        if self.config.resource not in _audiences(claims):
            raise TokenRefused("issued for another audience")
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= time.time():
            raise TokenRefused("expired")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenRefused("names no subject")

    async def _jwt_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenRefused(f"malformed: {exc}") from exc
        alg = header.get("alg")
        # Checked before any key is looked up: the token's own alg never widens the allow-list.
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise TokenRefused(f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = await self.keys.key(str(kid) if kid is not None else None, alg)
        if key is None:
            raise TokenRefused(f"signed with a key the issuer does not publish (kid {kid!r})")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.config.resource,
                issuer=self.config.issuer,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenRefused(str(exc)) from exc
        return claims

    async def _introspected_claims(self, token: str) -> dict[str, Any]:
        if not self.config.introspection_url:
            raise TokenRefused("not a JWT, and no introspection endpoint is configured")
        try:
            async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False) as http:
                response = await http.post(
                    self.config.introspection_url,
                    data={"token": token, "token_type_hint": "access_token"},
                    auth=(self.config.client_id, self.config.client_secret),
                    headers={"accept": "application/json"},
                )
            response.raise_for_status()
            answer = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise TokenRefused(f"introspection failed: {exc}") from exc
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise TokenRefused("introspection says the token is not active")
        if "sub" not in answer and isinstance(answer.get("client_id"), str):
            # A client-credentials token acts for the client itself: its subject is the client
            # id, as RFC 9068 has JWT access tokens say (introspection may leave sub out).
            answer["sub"] = answer["client_id"]
        self._check_claims(answer)
        return answer

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of an IdP token. Raises ``TokenRefused``."""
        if len(token) > _MAX_TOKEN_CHARS:
            raise TokenRefused("too long")
        if token.count(".") == 2:
            return await self._jwt_claims(token)
        return await self._introspected_claims(token)

    async def verify_token(self, token: str) -> AccessToken | None:
        if token.startswith(TOKEN_PREFIX):
            static = await self.static.verify_token(token)
            # An admin's token is not an OAuth token: OAuth scopes do not apply to it.
            return static.model_copy(update={"scopes": list(self.config.scopes)}) if static else None
        try:
            claims = await self.claims(token)
        except TokenRefused as exc:
            log.info("refused an OAuth access token: %s", exc)
            return None
        identity = Identity(
            issuer=self.config.issuer,
            subject=str(claims["sub"]),
            name=str(claim(claims, self.config.name_claim) or "")[:150],
            groups=groups_of(claims, self.config.groups_claim),
        )
        try:
            # Safe to repeat: bind finds the client a lost reply may already have created.
            client = await in_thread(
                lambda: retrying(
                    lambda: bind(identity, self.config.create_groups), "binding an OAuth identity"
                )
            )
        except DatabaseUnavailable as exc:
            log.warning("could not check the OAuth access token of %s: %s", identity.subject, exc)
            dbguard.note(exc)
            return None
        except ClientAuthError as exc:
            log.info("refused an OAuth access token of %s: %s", identity.subject, exc)
            return None
        exp = claims.get("exp")
        return OAuthTokenAccess(
            token=digest_of(token),
            client_id=str(client.pk),
            client_name=client.name,
            scopes=scopes_of(claims),
            expires_at=int(exp) if isinstance(exp, int | float) else None,
            resource=self.config.resource,
            subject=identity.subject,
            claims={"iss": identity.issuer},
            oauth_issuer=identity.issuer,
            oauth_subject=identity.subject,
        )


def auth_settings(base_url: str, config: OAuthConfig | None) -> AuthSettings:
    """The SDK's auth settings: with an issuer, the resource server's (metadata, 401 hints, scopes)."""
    if config is None:
        # Tokens are issued by the admin, not by an OAuth server: no metadata is published,
        # and issuer_url (mandatory) is only this server's own URL.
        return AuthSettings(issuer_url=AnyHttpUrl(base_url), resource_server_url=None)
    # Validated from strings, not AnyHttpUrl objects: the model keeps a path-less issuer as
    # written (no added "/"), and clients compare issuers as exact strings (RFC 8414 3.3).
    return AuthSettings.model_validate(
        {
            "issuer_url": config.issuer,
            "resource_server_url": config.resource,
            "required_scopes": list(config.scopes) or None,
            # The verifier checks the audience itself (PyJWT, or the introspection answer).
            "validate_token_resource": False,
        }
    )
