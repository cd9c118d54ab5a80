"""Identities vouched for by an OAuth identity provider (IdP), as MCP clients and groups.

A verified access token names an issuer, a subject (``sub``, unique per issuer), a display
name (a configurable claim such as ``email``) and groups (a configurable claim). The
subject is bound to one ``McpClient``, made on first use with no grants of its own; its
group memberships are set to the token's groups at every request, so a grant given to a
group reaches the people in that IdP group and leaves them when they leave it.

Group names from the IdP become slugs (``SRE Team`` -> ``sre-team``, ``/ops/db`` ->
``ops-db``) and are matched to ``ClientGroup`` names; groups not known to the admin are
ignored unless ``create_groups`` is set. Nothing here verifies a token: that is
``sshcontrol.mcp.oauth``'s job, and only a verified identity may reach ``bind``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from hosts.access_models import ClientGroup, McpClient
from hosts.clients import ClientAuthError, mark_used

_NAME_MAX = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    name: str  # the name claim's value (e.g. an e-mail address); may be empty
    groups: tuple[str, ...]


def client_name(identity: Identity) -> str:
    """A slug for the client, from the name claim (``alice@example.com`` -> ``alice-example-com``)."""
    base = _UNSAFE.sub("-", identity.name or identity.subject).strip("-")[:80]
    return base or "idp-user"


def group_slugs(values: Iterable[str]) -> list[str]:
    slugs = {slugify(v)[:_NAME_MAX] for v in values}
    slugs.discard("")
    return sorted(slugs)


def _create(identity: Identity) -> McpClient:
    base = client_name(identity)
    for n in range(1, 100):
        name = base if n == 1 else f"{base}-{n}"
        if McpClient.objects.filter(name=name).exists():
            continue
        try:
            with transaction.atomic():
                return McpClient.objects.create(
                    name=name,
                    owner=identity.name[:150],
                    oauth_issuer=identity.issuer,
                    oauth_subject=identity.subject,
                    description=f"Signed in through {identity.issuer} as {identity.subject}.",
                )
        except IntegrityError:
            # Another request made this identity's client, or took the name, at the same time.
            existing = McpClient.objects.filter(
                oauth_issuer=identity.issuer, oauth_subject=identity.subject
            ).first()
            if existing is not None:
                return existing
    raise ClientAuthError(f"no free client name for {base!r}")


def sync_groups(client: McpClient, groups: Iterable[str], create_groups: bool) -> None:
    """Make the client's groups exactly the token's groups known here (written only when they differ)."""
    wanted = group_slugs(groups)
    if create_groups:
        for name in wanted:
            ClientGroup.objects.get_or_create(
                name=name, defaults={"description": "Made from an identity provider's group claim."}
            )
    wanted_ids = set(ClientGroup.objects.filter(name__in=wanted).values_list("id", flat=True))
    current_ids = set(client.groups.values_list("id", flat=True))
    if wanted_ids != current_ids:
        # set() sends m2m_changed, which drops the cached grants of every process here.
        client.groups.set(wanted_ids)


def bind(identity: Identity, create_groups: bool = False) -> McpClient:
    """The active client of this identity (made on first use), its groups synced to the token.

    Raises ``ClientAuthError`` when the client is disabled or revoked: a valid token does not
    override the admin.
    """
    if not identity.issuer or not identity.subject:
        raise ClientAuthError("the token names no issuer or subject")
    client = McpClient.objects.filter(oauth_issuer=identity.issuer, oauth_subject=identity.subject).first()
    if client is None:
        client = _create(identity)
    refusal = client.refusal()
    if refusal:
        raise ClientAuthError(refusal)
    if identity.name and client.owner != identity.name[:150]:
        # The owner is who cannot approve this client's requests: keep it the person's name.
        McpClient.objects.filter(pk=client.pk).update(owner=identity.name[:150])
        client.owner = identity.name[:150]
    sync_groups(client, identity.groups, create_groups)
    mark_used(client)
    return client
