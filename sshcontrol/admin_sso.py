"""OpenID Connect sign-in for the admin (off unless ``SSHCONTROL_ADMIN_OIDC_ISSUER`` is set).

Built on mozilla-django-oidc (authorization code flow with PKCE and a nonce; the ID token's
signature checked against the issuer's JWKS). sshcontrol adds three things:

- the endpoints come from the issuer's discovery document (fetched on first use, its
  ``issuer`` checked exactly), so only the issuer is configured;
- who may sign in, and as what: a person in one of ``SSHCONTROL_ADMIN_OIDC_SUPERUSER_GROUPS``
  becomes a superuser, one in ``SSHCONTROL_ADMIN_OIDC_STAFF_GROUPS`` staff (with the Django
  auth groups named like their IdP groups, whose permissions a superuser sets); anybody else
  is refused. Roles are recomputed at every sign-in;
- accounts made this way are named ``sso:<email or subject>``, so they never match a local
  account: local accounts (the break-glass ``admin``) keep working with their passwords, and
  an IdP asserting some e-mail address cannot sign in as a local account that has it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import httpx2
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db.models import QuerySet
from django.utils.text import slugify
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationRequestView

from sshcontrol.mcp.oauth import claim, groups_of

USERNAME_PREFIX = "sso:"
_ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
_discovered: dict[str, Any] = {}
_lock = threading.Lock()


class DiscoveryError(RuntimeError):
    pass


def discovery() -> dict[str, Any]:
    """The issuer's OpenID configuration, fetched once per process."""
    with _lock:
        if not _discovered:
            issuer = settings.ADMIN_OIDC_ISSUER
            url = issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                response = httpx2.get(url, timeout=10, follow_redirects=False)
                response.raise_for_status()
                document = response.json()
            except (httpx2.HTTPError, ValueError) as exc:
                raise DiscoveryError(f"cannot read {url}: {exc}") from exc
            if not isinstance(document, dict) or document.get("issuer") != issuer:
                raise DiscoveryError(f"{url} does not name issuer {issuer!r}")
            _discovered.update(document)
        return dict(_discovered)


def config_problems() -> list[str]:
    """Configuration mistakes, for ``manage.py check`` (sshcontrol.E065)."""
    if not settings.ADMIN_OIDC_ISSUER:
        return []
    from sshcontrol.mcp.oauth import url_problem

    problems = [url_problem("SSHCONTROL_ADMIN_OIDC_ISSUER", settings.ADMIN_OIDC_ISSUER)]
    if not (settings.OIDC_RP_CLIENT_ID and settings.OIDC_RP_CLIENT_SECRET):
        problems.append(
            "SSHCONTROL_ADMIN_OIDC_CLIENT_ID and SSHCONTROL_ADMIN_OIDC_CLIENT_SECRET (or _FILE) are required"
        )
    if not (settings.ADMIN_OIDC_STAFF_GROUPS or settings.ADMIN_OIDC_SUPERUSER_GROUPS):
        problems.append(
            "name SSHCONTROL_ADMIN_OIDC_STAFF_GROUPS or SSHCONTROL_ADMIN_OIDC_SUPERUSER_GROUPS: "
            "without them nobody may sign in through the identity provider"
        )
    if settings.OIDC_RP_SIGN_ALGO.upper().startswith("HS") or settings.OIDC_RP_SIGN_ALGO.lower() == "none":
        problems.append("SSHCONTROL_ADMIN_OIDC_SIGN_ALGO must be an asymmetric algorithm such as RS256")
    return [p for p in problems if p]


def sso_setting(attr: str, *args: Any) -> Any:
    """mozilla-django-oidc's settings, with the provider's endpoints taken from discovery."""
    if attr in _ENDPOINTS:
        return discovery()[_ENDPOINTS[attr]]
    return import_from_settings(attr, *args)


def sso_username(claims: dict[str, Any]) -> str:
    name = str(claim(claims, settings.ADMIN_OIDC_NAME_CLAIM) or claims.get("sub") or "")
    return (USERNAME_PREFIX + name)[:150]


def _matching(groups: Iterable[str], wanted: Iterable[str]) -> set[str]:
    have = {slugify(g) for g in groups}
    return have & {slugify(w) for w in wanted}


class AdminOidcBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """Signs in IdP users in the configured groups; never a local account."""

    get_settings = staticmethod(sso_setting)

    def _groups(self, claims: dict[str, Any]) -> tuple[str, ...]:
        return groups_of(claims, settings.ADMIN_OIDC_GROUPS_CLAIM)

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if not claims.get("sub"):
            return False
        groups = self._groups(claims)
        allowed = _matching(
            groups, [*settings.ADMIN_OIDC_STAFF_GROUPS, *settings.ADMIN_OIDC_SUPERUSER_GROUPS]
        )
        return bool(allowed)

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[AbstractBaseUser]:
        users: QuerySet[AbstractBaseUser] = get_user_model().objects.filter(username=sso_username(claims))
        return users

    def create_user(self, claims: dict[str, Any]) -> AbstractBaseUser:
        user = get_user_model().objects.create_user(sso_username(claims), email=claims.get("email") or "")
        self.update_user(user, claims)
        return user

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        groups = self._groups(claims)
        user.is_superuser = bool(_matching(groups, settings.ADMIN_OIDC_SUPERUSER_GROUPS))
        user.is_staff = True  # verify_claims let only staff and superuser groups through
        user.email = claims.get("email") or user.email
        user.set_unusable_password()  # signs in only through the IdP
        user.save()
        user.groups.set(Group.objects.filter(name__in=[slugify(g) for g in groups]))
        return user


class AuthenticationRequestView(OIDCAuthenticationRequestView):  # type: ignore[misc]
    """The redirect to the provider, its endpoint from discovery."""

    get_settings = staticmethod(sso_setting)
