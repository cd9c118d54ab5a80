"""What the inventory admins share: the refusal of secret lookups, state badges, URL helpers."""

from __future__ import annotations

from typing import TypeVar

from django.contrib import admin
from django.db.models import Model
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from hosts.access_models import Grant

_M = TypeVar("_M", bound=Model)

SECRET_FIELDS = frozenset(
    {"secret_encrypted", "passphrase_encrypted", "sudo_password_encrypted", "token_digest", "stdin"}
)

sensitive_post_parameters_m = method_decorator(sensitive_post_parameters())
csrf_protect_m = method_decorator(csrf_protect)

KEY_STATE_COLORS = {
    "trusted": "#2e7d32",
    "pending": "#ef6c00",
    "offered": "#546e7a",
    "changed": "#c62828",
    "revoked": "#616161",
    "unknown": "#757575",
}
# Badge colours for the states of everything else (clients, approval requests), by what the
# state means to an admin rather than by a host key state that happens to share the colour.
TONE_COLORS = {
    "good": "#2e7d32",  # usable, may run
    "waiting": "#ef6c00",  # waits for an admin
    "bad": "#c62828",  # refused, expired
    "muted": "#757575",  # not in use now
    "over": "#616161",  # ended for good
}
KEY_STATE_LABELS = {
    "changed": "CHANGED - new key pending",
    "pending": "pending approval",
    "offered": "also offered",
    "trusted": "trusted",
    "unknown": "no key yet",
}


def short_fingerprint(fingerprint: str, keep: int = 6) -> SafeString:
    """``SHA256:Qm9vdH…ZXJwcmlu``: the algorithm, the first and last characters; all of it on hover.

    Enough to tell keys apart in a list; comparing a key with ``ssh-keygen -lf`` is done
    on the key's own page, which shows the whole fingerprint.
    """
    algorithm, sep, digest = fingerprint.partition(":")
    if not sep or len(digest) <= 2 * keep + 1:
        return format_html("<code>{}</code>", fingerprint)
    return format_html(
        '<code title="{}">{}:{}…{}</code>', fingerprint, algorithm, digest[:keep], digest[-keep:]
    )


def state_badge(state: str, label: str | None = None) -> SafeString:
    """A host key state's badge."""
    return _badge(KEY_STATE_COLORS.get(state, "#757575"), label or state)


def tone_badge(tone: str, label: str) -> SafeString:
    """A badge coloured by ``TONE_COLORS``."""
    return _badge(TONE_COLORS[tone], label)


def _badge(color: str, label: str) -> SafeString:
    return format_html(
        '<span style="color:#fff;background:{};padding:1px 6px;border-radius:8px;white-space:nowrap">'
        "{}</span>",
        color,
        label,
    )


class InventoryAdmin(admin.ModelAdmin[_M]):
    """Refuses URL lookups that touch an encrypted column, from any model (e.g. credential__secret...).

    ``?secret_encrypted__startswith=s`` would otherwise let anyone with view permission
    guess a ciphertext (or a plaintext that slipped in) one character at a time.
    """

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if SECRET_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)


def admin_url(name: str, *args: object, query: str = "") -> str | None:
    """The URL of an admin page other apps may or may not register (None when it is not there)."""
    try:
        url = reverse(name, args=args)
    except NoReverseMatch:
        return None
    return f"{url}?{query}" if query else url


class GrantColumns:
    """A grant's hosts and permissions in words: columns of the grant list and of a client's grants."""

    @admin.display(description="Hosts")
    def scope(self, obj: Grant) -> str:
        return obj.scope_text()

    @admin.display(description="Permissions")
    def permissions(self, obj: Grant) -> str:
        return obj.permissions_text()
