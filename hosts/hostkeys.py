"""Host key trust decisions.

Every change of a key's state goes through one of these functions so that who approved
a key, and when, is always recorded the same way (admin actions and the ``hosts``
command both call them). ``scan`` is the one way both fetch the keys a server offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hosts.models import Host, HostKey, key_state_of

if TYPE_CHECKING:
    from sshlib.errors import HostKeyChanged, HostKeyUnknown

TOFU_APPROVER = "trust-on-first-use"


class HostKeyNotFound(LookupError):
    """No key with that fingerprint is known for the host."""


class KeyChangeNotConfirmed(PermissionError):
    """Approving this key would replace the trusted key of its type; that needs ``replace=True``."""


@dataclass(frozen=True)
class Approval:
    key: HostKey
    replaced: tuple[HostKey, ...]  # trusted keys of the same type revoked by this approval


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


@dataclass(frozen=True)
class ScanOutcome:
    """The keys a scan stored for a host, or why it could not scan."""

    host: Host
    keys: tuple[HostKey, ...] = ()
    error: str = ""


def scan(host: Host) -> ScanOutcome:
    """Fetch the host keys the server offers and store new ones as pending (known keys keep their state).

    A host behind jump hosts is scanned through them: each hop is verified against its own
    trusted keys and logged in to with its own credential, as for a session; a hop's unknown
    or changed key is stored as pending for that hop and the scan refused, naming it.
    """
    # Imported here: the SSH library (paramiko) is not needed to render admin pages or run
    # the other ``hosts`` subcommands.
    from hosts.models import JumpLoop
    from hosts.specs import JumpHostDisabled, NoCredential, hop_specs
    from sshlib.connect import scan_through
    from sshlib.errors import HostKeyChanged, HostKeyUnknown, SshError

    where = f"{host.address}:{host.port}"
    try:
        hops = hop_specs(host)
        seen = scan_through(hops, host.address, host.port, timeout=float(settings.CONNECT_TIMEOUT))
    except (NoCredential, JumpHostDisabled, JumpLoop) as exc:
        return ScanOutcome(host, error=f"cannot scan {where}: {exc}")
    except (HostKeyUnknown, HostKeyChanged) as exc:
        return ScanOutcome(host, error=_hop_key_refused(host, exc))
    except SshError as exc:
        return ScanOutcome(host, error=f"cannot scan {where}: {exc}")
    if not seen:
        return ScanOutcome(host, error=f"{where} offered no host keys")
    keys = tuple(record_seen(host, s.key_type, s.public_key, s.fingerprint) for s in seen)
    return ScanOutcome(host, keys)


def _hop_key_refused(host: Host, exc: HostKeyUnknown | HostKeyChanged) -> str:
    """A jump host on the way presented a key it does not trust: stored pending for that hop."""
    hop = Host.objects.filter(pk=int(exc.host_ref)).first() if exc.host_ref.isdigit() else None
    if hop is None:  # removed meanwhile: nothing to store the key against
        return f"cannot scan {host.address}:{host.port}: {exc}"
    record_seen(hop, exc.seen.key_type, exc.seen.public_key, exc.seen.fingerprint)
    return (
        f"cannot scan {host.address}:{host.port}: {exc}. The key is stored as pending for jump host "
        f"'{hop.name}': compare it with the server's own and approve it (sshcontrol hosts trust "
        f"{hop.name} {exc.seen.fingerprint}) before scanning through it."
    )


def _locked_key(host: Host, fingerprint: str) -> HostKey:
    try:
        return HostKey.objects.select_for_update().get(host=host, fingerprint=fingerprint.strip())
    except HostKey.DoesNotExist:
        raise HostKeyNotFound(
            f"no key with fingerprint {fingerprint.strip()} is known for host '{host.name}'"
        ) from None


def trust(host: Host, fingerprint: str, by: str) -> HostKey:
    """Approve a key, replacing the trusted key of its type (see ``approve``). Raises HostKeyNotFound.

    Naming a key by its fingerprint (the ``hosts trust`` command) is itself the explicit
    decision a changed key needs.
    """
    return approve(host, fingerprint, by, replace=True).key


def approve(host: Host, fingerprint: str, by: str, replace: bool = False) -> Approval:
    """Trust a key; records who and when. Raises HostKeyNotFound, KeyChangeNotConfirmed.

    A host has at most one trusted key per key type. When a trusted key of the same type
    exists, the server's key has *changed*: that is refused unless ``replace`` is true, and
    then the old key is revoked in the same transaction. Leaving both trusted would keep
    accepting a key the server no longer has - exactly the key an attacker who stole it
    would present.
    """
    with transaction.atomic():
        key = _locked_key(host, fingerprint)
        others = list(
            HostKey.objects.select_for_update()
            .filter(host=host, key_type=key.key_type, state=HostKey.State.TRUSTED)
            .exclude(pk=key.pk)
            .order_by("id")
        )
        if others and not replace:
            raise KeyChangeNotConfirmed(
                f"{key.key_type} {key.fingerprint} would replace the trusted {key.key_type} key "
                f"{others[0].fingerprint} of host '{host.name}'; confirm the change explicitly"
            )
        now = timezone.now()
        for old in others:
            old.state = HostKey.State.REVOKED
            old.approved_at = now
            old.approved_by = by
            old.save(update_fields=["state", "approved_at", "approved_by"])
        key.state = HostKey.State.TRUSTED
        key.approved_at = now
        key.approved_by = by
        key.save(update_fields=["state", "approved_at", "approved_by"])
        return Approval(key, tuple(others))


def replaced_by(key: HostKey) -> HostKey | None:
    """The trusted key that approving this pending key would replace (None when it is no change)."""
    if key.state != HostKey.State.PENDING:
        return None
    return (
        HostKey.objects.filter(host_id=key.host_id, key_type=key.key_type, state=HostKey.State.TRUSTED)
        .order_by("id")
        .first()
    )


def also_offered(key: HostKey) -> bool:
    """Whether ``key`` is pending beside a trusted key of another type and of none of its own.

    Such a host connects with its trusted key; this one is merely also offered by the
    server (a scan stores every type). Approving it is optional and nothing waits on it.
    """
    if key.state != HostKey.State.PENDING:
        return False
    trusted_types = set(
        HostKey.objects.filter(host_id=key.host_id, state=HostKey.State.TRUSTED).values_list(
            "key_type", flat=True
        )
    )
    return bool(trusted_types) and key.key_type not in trusted_types


def host_key_states() -> dict[int, str]:
    """Every host's key state (changed, trusted, pending; hosts without keys are absent), in one query."""
    rows: dict[int, list[tuple[str, str]]] = {}
    for host_id, state, key_type in HostKey.objects.values_list("host_id", "state", "key_type"):
        rows.setdefault(host_id, []).append((state, key_type))
    return {host_id: key_state_of(keys) for host_id, keys in rows.items()}


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
