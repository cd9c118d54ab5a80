"""Pruning the audit log: the oldest finished rows go, the rest stays one verifiable chain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit import chain, writer
from audit.models import AuditAnchor, AuditEvent


class ChainBrokenError(Exception):
    """The hash chain does not verify; pruning would delete the evidence, so it is refused."""


@dataclass(frozen=True)
class Pruned:
    """What ``prune`` deleted (or, on a dry run, would delete)."""

    cutoff: datetime
    count: int
    first_seq: int | None
    last_seq: int | None
    anchor_id: int | None


def prune(*, older_than: timedelta, pruned_by: str, dry_run: bool = False) -> Pruned:
    """Delete the oldest finished rows: the longest prefix of the chain finished before the cutoff.

    The chain is verified first (a broken chain is never pruned: that would destroy the
    evidence). Only a prefix is deleted, so what remains is still one unbroken chain, and
    an ``AuditAnchor`` records where it now starts, by whom and how much was deleted.
    Running rows are not on the chain and are never deleted.
    """
    cutoff = timezone.now() - older_than
    verification = chain.verify()
    if verification.broken is not None:
        raise ChainBrokenError(str(verification.broken))
    connection = writer._connection()
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # The writer's own head lock, the one complete() takes: no row is chained while the start moves.
        writer._lock_head(cursor)
        start = chain.chain_start()
        first_kept: int | None = (
            AuditEvent.objects.filter(chain_seq__gte=start.seq, finished_at__gte=cutoff)
            .order_by("chain_seq")
            .values_list("chain_seq", flat=True)
            .first()
        )
        # Only rows the verification above covered: later ones were not checked.
        last_seq = min(
            first_kept - 1 if first_kept is not None else verification.last_seq, verification.last_seq
        )
        if start != verification.start or last_seq < start.seq:
            return Pruned(cutoff, 0, None, None, None)
        doomed = AuditEvent.objects.filter(chain_seq__gte=start.seq, chain_seq__lte=last_seq)
        if dry_run:
            return Pruned(cutoff, doomed.count(), start.seq, last_seq, None)
        last_hash = (
            AuditEvent.objects.filter(chain_seq=last_seq).values_list(chain.HASH_FIELD, flat=True).get()
        )
        count, _ = doomed.delete()
        anchor = AuditAnchor.objects.create(
            created_at=timezone.now(),
            pruned_by=pruned_by[:200],
            pruned_before=cutoff,
            pruned_count=count,
            first_seq=last_seq + 1,
            prev_hash=last_hash,
        )
    return Pruned(cutoff, count, start.seq, last_seq, anchor.pk)
