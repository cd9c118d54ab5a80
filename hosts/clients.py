"""MCP client tokens: made once, stored as a digest, looked up by it.

A token is ``sshc_`` followed by 43 URL-safe characters (256 random bits). The prefix
lets secret scanners recognise a leaked token; the digest is SHA-256, which is enough for
a value with that much entropy (a slow password hash would only slow every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from hosts.access_models import Grant, McpClient

TOKEN_PREFIX = "sshc_"  # noqa: S105 - a public marker, not a secret
_TOKEN_BYTES = 32
# Longest token accepted for lookup: anything longer is not ours and is not hashed.
_MAX_TOKEN_CHARS = 200
# last_used_at is written at most this often per client: it is shown in the admin, not audited.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


class ClientAuthError(PermissionError):
    """The token does not name an active client; the message never repeats the token."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    client: McpClient
    token: str  # shown once, never stored


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def issue_token(client: McpClient) -> IssuedToken:
    """Give ``client`` a new token (replacing any previous one) and return it, to show once."""
    token = new_token()
    client.token_digest = digest(token)
    client.token_prefix = token[: len(TOKEN_PREFIX) + 4]
    client.save(update_fields=["token_digest", "token_prefix"])
    return IssuedToken(client, token)


def create_client(
    name: str,
    owner: str = "",
    description: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    """A new token client with no grants (it can do nothing until an admin grants it hosts)."""
    with transaction.atomic():
        client = McpClient.objects.create(
            name=name, owner=owner, description=description, expires_at=expires_at
        )
        return issue_token(client)


def revoke(client: McpClient) -> None:
    client.revoked_at = timezone.now()
    client.enabled = False
    client.save(update_fields=["revoked_at", "enabled"])


def authenticate(token: str) -> McpClient:
    """The active client whose token this is. Raises ClientAuthError with a reason fit to show."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
        raise ClientAuthError("not an sshcontrol client token (they start with 'sshc_')")
    wanted = digest(token)
    client = McpClient.objects.filter(token_digest=wanted).first()
    # compare_digest: the lookup already matched, but keep the comparison constant-time anyway.
    if client is None or not hmac.compare_digest(client.token_digest, wanted):
        raise ClientAuthError("unknown client token")
    refusal = client.refusal()
    if refusal:
        raise ClientAuthError(refusal)
    mark_used(client)
    return client


def mark_used(client: McpClient) -> None:
    now = timezone.now()
    if client.last_used_at is None or now - client.last_used_at >= _LAST_USED_RESOLUTION:
        McpClient.objects.filter(pk=client.pk).update(last_used_at=now)
        client.last_used_at = now


def local_client_name(os_user: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in os_user)[:80] or "unknown"
    return f"local-{safe}"


def local_client(os_user: str) -> McpClient:
    """The client of the local OS user (stdio, no token), made on first use.

    It starts with one grant over every host without sudo, uploads included, so that the
    embedded default works out of the box; the admin restricts it like any other client
    (edit or delete that grant, disable the client).
    """
    name = local_client_name(os_user)
    client = McpClient.objects.filter(name=name).first()
    if client is not None:
        return client
    with transaction.atomic():
        client, created = McpClient.objects.get_or_create(
            name=name,
            defaults={
                "local_user": os_user[:150],
                "description": f"The OS user {os_user!r} over stdio without a token.",
            },
        )
        if created:
            Grant.objects.create(
                client=client,
                all_hosts=True,
                can_write_files=True,
                description="Made with the local client; edit or delete it to restrict this user.",
            )
    return client
