"""The issuer's key set (cached, refetched on rotation, rate-limited), claims and configuration checks.

The end-to-end behaviour against a real provider is in test_oauth; here the clock and the
fetches are counted, so the rate limits are checked exactly.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from django.test import override_settings

from sshcontrol.mcp.oauth import KeySet, claim, config_problems, groups_of, scopes_of
from tests.oidc.idp import ec_key, rsa_key


def public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


class Published:
    """What the issuer publishes, with a fake clock and a count of fetches."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = [public(k) for k in keys]
        self.fetches = 0
        self.now = 1000.0
        self.fail = False

    async def fetch(self) -> Any:
        self.fetches += 1
        if self.fail:
            raise OSError("connection refused")
        return {"keys": list(self.keys)}

    def key_set(self, min_refresh: float = 10, max_age: float = 300) -> KeySet:
        return KeySet(self.fetch, min_refresh, max_age, clock=lambda: self.now)


def find(keys: KeySet, kid: str | None, alg: str = "RS256") -> bool:
    return anyio.run(keys.key, kid, alg) is not None


def test_it_fetches_once_and_serves_known_keys_from_the_cache() -> None:
    issuer = Published(rsa_key("a"))
    keys = issuer.key_set()
    assert find(keys, "a") and find(keys, "a") and find(keys, None)
    assert issuer.fetches == 1


def test_it_refetches_on_an_unknown_kid_at_most_every_interval() -> None:
    issuer = Published(rsa_key("a"))
    keys = issuer.key_set(min_refresh=10)
    assert find(keys, "a")
    issuer.keys.append(public(rsa_key("b")))
    issuer.now += 5
    assert not find(keys, "b")  # too soon after the last fetch: no request to the IdP
    assert not find(keys, "made-up")
    assert issuer.fetches == 1
    issuer.now += 5
    assert find(keys, "b")
    assert issuer.fetches == 2


def test_it_drops_a_removed_key_at_the_next_fetch() -> None:
    issuer = Published(rsa_key("a"))
    keys = issuer.key_set(min_refresh=1, max_age=60)
    assert find(keys, "a")
    issuer.keys = [public(rsa_key("b"))]
    issuer.now += 2
    assert find(keys, "a")  # still cached: nothing asked for a new key yet
    assert find(keys, "b")  # the new key is used: the set is refetched, without "a"
    assert not find(keys, "a")
    issuer.keys = [public(rsa_key("c"))]
    issuer.now += 61
    assert not find(keys, "b")  # too old: refetched even for a known kid


def test_it_keeps_the_known_keys_when_a_fetch_fails() -> None:
    issuer = Published(rsa_key("a"))
    keys = issuer.key_set(min_refresh=1, max_age=5)
    assert find(keys, "a")
    issuer.fail = True
    issuer.now += 10
    assert find(keys, "a")
    assert issuer.fetches == 2


def test_it_matches_a_key_only_to_its_declared_algorithm_and_never_takes_secrets() -> None:
    issuer = Published(rsa_key("a"), ec_key("e"))
    issuer.keys.append({"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"})
    issuer.keys.append({**public(rsa_key("enc")), "use": "enc"})
    keys = issuer.key_set()
    assert find(keys, "a", "RS256") and not find(keys, "a", "ES256")
    assert find(keys, "e", "ES256")
    assert not find(keys, "s", "HS256") and not find(keys, "enc")
    assert find(keys, None, "RS256")  # without a kid, the one key for that algorithm
    issuer.keys.append(public(rsa_key("a2")))
    issuer.now += 20
    assert find(keys, "a2")
    assert not find(keys, None, "RS256")  # two RS256 keys: without a kid, neither is chosen


def test_it_reads_scopes_groups_and_nested_claims() -> None:
    assert scopes_of({"scope": "mcp:tools openid"}) == ["mcp:tools", "openid"]
    assert scopes_of({"scp": ["mcp:tools"]}) == ["mcp:tools"]
    assert scopes_of({}) == []
    token = {"groups": ["a", 3, {"x": 1}], "realm_access": {"roles": ["ops"]}, "team": "sre"}
    assert groups_of(token, "groups") == ("a", "3")
    assert groups_of(token, "realm_access.roles") == ("ops",)
    assert groups_of(token, "team") == ("sre",)
    assert groups_of(token, "missing.path") == ()
    assert claim({"a.b": 1, "a": {"b": 2}}, "a.b") == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, []),
        ({"OAUTH_RESOURCE": ""}, ["SSHCONTROL_OAUTH_RESOURCE (the canonical URL"]),
        ({"OAUTH_ISSUER": "http://idp.example.com"}, ["must be https"]),
        ({"OAUTH_ALGORITHMS": ["RS256", "HS256"]}, ["may name only"]),
        ({"OAUTH_ALGORITHMS": ["none"]}, ["may name only"]),
        (
            {"OAUTH_INTROSPECTION_URL": "https://idp.example.com/introspect"},
            ["needs SSHCONTROL_OAUTH_CLIENT_ID"],
        ),
        ({"OAUTH_ISSUER": "", "OAUTH_RESOURCE": "https://mcp.example.com/mcp"}, ["ISSUER is not"]),
    ],
)
def test_it_checks_the_oauth_configuration(overrides: dict[str, Any], expected: list[str]) -> None:
    base = {
        "OAUTH_ISSUER": "https://idp.example.com",
        "OAUTH_RESOURCE": "https://mcp.example.com/mcp",
        "OAUTH_ALGORITHMS": ["RS256", "ES256"],
        "OAUTH_INTROSPECTION_URL": "",
        "OAUTH_JWKS_URL": "",
    }
    with override_settings(**{**base, **overrides}):
        problems = config_problems()
    assert len(problems) == len(expected), problems
    for problem, wanted in zip(problems, expected, strict=True):
        assert wanted in problem
