"""Host key trust decisions.

Every change of a key's state goes through one of these functions so that who approved
a key, and when, is always recorded the same way (admin actions and the ``hosts``
command both call them).
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from hosts.models import Host, HostKey

TOFU_APPROVER = "trust-on-first-use"


class HostKeyNotFound(LookupError):
    """No key with that fingerprint is known for the host."""


def trusted_keys(host: Host) -> tuple[tuple[str, str], ...]:
    """(key_type, base64) of the host's trusted keys."""
    rows = host.host_keys.filter(state=HostKey.State.TRUSTED).order_by("key_type", "id")
    return tuple((key_type, blob) for key_type, blob in rows.values_list("key_type", "public_key"))


def record_seen(
    host: Host, key_type: str, public_key: str, fingerprint: str, trusted: bool = False
) -> HostKey:
    """Store a key the server presented: pending (or trusted, for trust-on-first-use).

    A key already stored keeps its state: a revoked key never becomes pending again and
    a pending key is never promoted here.
    """
    with transaction.atomic():
        if trusted:
            defaults: dict[str, object] = {
                "key_type": key_type,
                "public_key": public_key,
                "state": HostKey.State.TRUSTED,
                "approved_at": timezone.now(),
                "approved_by": TOFU_APPROVER,
            }
        else:
            defaults = {"key_type": key_type, "public_key": public_key, "state": HostKey.State.PENDING}
        key, _created = HostKey.objects.get_or_create(host=host, fingerprint=fingerprint, defaults=defaults)
        return key


def _locked_key(host: Host, fingerprint: str) -> HostKey:
    try:
        return HostKey.objects.select_for_update().get(host=host, fingerprint=fingerprint.strip())
    except HostKey.DoesNotExist:
        raise HostKeyNotFound(
            f"no key with fingerprint {fingerprint.strip()} is known for host '{host.name}'"
        ) from None


def trust(host: Host, fingerprint: str, by: str) -> HostKey:
    """Approve a pending key; records who and when. Raises HostKeyNotFound."""
    with transaction.atomic():
        key = _locked_key(host, fingerprint)
        key.state = HostKey.State.TRUSTED
        key.approved_at = timezone.now()
        key.approved_by = by
        key.save(update_fields=["state", "approved_at", "approved_by"])
        return key


def revoke(host: Host, fingerprint: str, by: str) -> HostKey:
    """Stop trusting a key. Raises HostKeyNotFound.

    ``approved_by``/``approved_at`` record the last decision, so they now name who revoked it.
    """
    with transaction.atomic():
        key = _locked_key(host, fingerprint)
        key.state = HostKey.State.REVOKED
        key.approved_at = timezone.now()
        key.approved_by = by
        key.save(update_fields=["state", "approved_at", "approved_by"])
        return key
