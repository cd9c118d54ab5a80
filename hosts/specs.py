"""Turning a registered host into a ``ConnectSpec``: the one place host credentials are decrypted.

It runs in the process that makes the SSH connection (the MCP server on the embedded
default, a Celery worker in distributed mode, the admin or ``hosts scan`` for the jump hosts
a scan goes through), never where a model could see the result. It lives with the inventory
so that a host key scan (``hosts/hostkeys.py``) reaches a host behind its jump hosts with the
same specs a session uses; ``sshcontrol/credentials.py`` re-exports it for the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from django.conf import settings

from hosts import hostkeys
from hosts.models import Credential, Host, HostKey
from sshlib.connect import ConnectSpec


class NoCredential(LookupError):
    """The host has no credential attached."""


class JumpHostDisabled(PermissionError):
    """A jump host on the way to the host is disabled: no connection may pass through it."""


TrustedKeys = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PreparedHost:
    """A host loaded ahead of its connection, for a batch: nothing decrypted, nothing per host.

    ``host`` has its credential and its first two jump hosts (with theirs) selected;
    ``trusted`` holds the trusted keys of the host and of those jump hosts, as they were when
    the batch prepared it (a snapshot: a key an administrator changes or revokes after that
    is seen by the next batch, one before it refuses the host here). A deeper hop not in it
    reads its keys from the database, as ``build_spec`` does without a prepared host.
    """

    host: Host
    trusted: Mapping[int, TrustedKeys]


def prepare(host_ids: Iterable[int], *, direct: bool = False) -> dict[int, PreparedHost]:
    """The hosts of ``host_ids`` with their credentials, jump hosts and trusted keys, in two queries.

    ``direct``: the caller expects hosts without jump hosts (the batch engine's, every batch):
    the jump hosts are not joined (a host that has one meanwhile reads its hops as
    ``build_spec`` does without a prepared host), and the columns a connection never reads
    (times, tags, notes: their conversion was most of the query's cost) are left deferred.
    """
    loading = Host.objects.filter(pk__in=list(host_ids))
    if direct:
        loading = loading.select_related("credential").defer(*_UNUSED)
    else:
        loading = loading.select_related(
            "credential", "jump_host__credential", "jump_host__jump_host__credential"
        )
    hosts = list(loading)
    ids: set[int] = set()
    for host in hosts:  # the host and the two jump hosts select_related loaded
        ids.add(host.pk)
        if host.jump_host is not None:
            ids.update(pk for pk in (host.jump_host.pk, host.jump_host.jump_host_id) if pk is not None)
    found: dict[int, list[tuple[str, str]]] = {pk: [] for pk in ids}
    rows = HostKey.objects.filter(host_id__in=ids, state=HostKey.State.TRUSTED).order_by("key_type", "id")
    for host_id, key_type, blob in rows.values_list("host_id", "key_type", "public_key"):
        found[host_id].append((key_type, blob))
    trusted = {pk: tuple(keys) for pk, keys in found.items()}
    return {host.pk: PreparedHost(host, trusted) for host in hosts}


# What a direct host's connection never reads, left out of ``prepare(direct=True)``.
_UNUSED = (
    "description",
    "tags",
    "proxy_jump",
    "last_connected_at",
    "created_at",
    "updated_at",
    "credential__public_key",
    "credential__fingerprint",
    "credential__sudo_password_encrypted",
    "credential__created_at",
    "credential__updated_at",
)


def build_spec(host: Host, trusted: Mapping[int, TrustedKeys] | None = None) -> ConnectSpec:
    """The spec of ``host``, with the specs of its jump hosts (``host.jump_chain()``) as its hops.

    ``trusted`` (a ``PreparedHost``'s) gives the trusted keys of the hosts it names; the
    others' are read from the database. Raises NoCredential when the host or one of its jump
    hosts has none, JumpHostDisabled when an administrator disabled one of its jump hosts,
    and ``hosts.models.JumpLoop`` when the links stored in the database make a loop.
    """
    hops = hop_specs(host, trusted)
    target = _spec_of(host, trusted=trusted)
    # Output of a session is redacted of every secret used to reach it, the hops' included.
    secrets = tuple(dict.fromkeys((*target.secrets, *(s for hop in hops for s in hop.secrets))))
    return replace(target, hops=hops, secrets=secrets)


def spec_source(host: Host, trusted: Mapping[int, TrustedKeys] | None = None) -> tuple[object, ...] | None:
    """What ``build_spec`` makes the spec of a direct host from, nothing decrypted (None: a host
    behind jump hosts, whose hops' sources would count too).

    Two equal sources give equal specs: a caller may keep a built spec (its secrets decrypted)
    while the host's source stays the same. It names every field ``_spec_of`` reads; the
    credential by its kind and ciphertexts (storing a secret, even the same one again, makes a
    new ciphertext: Fernet's IV is random).
    """
    if host.jump_host_id is not None:
        return None
    credential = host.credential
    stored = (
        (
            credential.pk,
            credential.kind,
            credential.secret_encrypted,
            credential.passphrase_encrypted,
        )
        if credential is not None
        else None
    )
    return (
        host.pk,
        host.name,
        host.address,
        host.port,
        host.username,
        host.trust_on_first_use,
        stored,
        _trusted(host, trusted),
        settings.CONNECT_TIMEOUT,
        settings.KEEPALIVE_SECONDS,
    )


def hop_specs(host: Host, trusted: Mapping[int, TrustedKeys] | None = None) -> tuple[ConnectSpec, ...]:
    """The specs of the jump hosts on the way to ``host``, outermost first (``()`` when direct).

    Raises NoCredential, JumpHostDisabled and JumpLoop as ``build_spec`` does, for the hops.
    """
    chain = host.jump_chain()
    # Checked before any secret is decrypted: disabling a bastion cuts off what lies behind it.
    disabled = next((hop for hop in chain if not hop.enabled), None)
    if disabled is not None:
        raise JumpHostDisabled(
            f"jump host '{disabled.name}' of host '{host.name}' is disabled by an administrator"
        )
    return tuple(_spec_of(hop, jumped_from=host, trusted=trusted) for hop in chain)


def _spec_of(
    host: Host, jumped_from: Host | None = None, trusted: Mapping[int, TrustedKeys] | None = None
) -> ConnectSpec:
    credential = host.credential
    if credential is None or not credential.has_secret:
        if jumped_from is not None:
            raise NoCredential(
                f"jump host '{host.name}' of host '{jumped_from.name}' has no credential; "
                "an admin must attach one"
            )
        raise NoCredential(f"host '{host.name}' has no credential; an admin must attach one")
    secret = credential.secret()
    passphrase = credential.passphrase() or None
    is_password = credential.kind == Credential.Kind.PASSWORD
    return ConnectSpec(
        address=host.address,
        port=host.port,
        username=host.username,
        password=secret if is_password else None,
        private_key=None if is_password else secret,
        passphrase=passphrase,
        trusted_keys=_trusted(host, trusted),
        # The caller pins a first-use key for the target only; a hop accepted on first use would
        # never be pinned, so a hop's first key waits for an approval like any unknown key.
        trust_on_first_use=host.trust_on_first_use and jumped_from is None,
        connect_timeout=settings.CONNECT_TIMEOUT,
        keepalive_seconds=settings.KEEPALIVE_SECONDS,
        secrets=tuple(s for s in (secret if is_password else "", passphrase or "") if s),
        name=host.name,
        host_ref=str(host.pk),
    )


def _trusted(host: Host, snapshot: Mapping[int, TrustedKeys] | None) -> TrustedKeys:
    known = snapshot.get(host.pk) if snapshot is not None else None
    return known if known is not None else hostkeys.trusted_keys(host)
