"""What an attacker with write access to the database can do: rewrite the chain consistently."""

from __future__ import annotations

from typing import Any

from audit import chain
from audit.models import AuditEvent, ChainHead


def rehash_from(seq: int, **changes: Any) -> None:
    """Re-link every row from chain_seq ``seq`` to the end, as a forger would, and move the head.

    ``changes`` are applied to each of those rows first (``chain_version=1`` re-hashes
    them with the old formula). The chain then holds together again: only something kept
    outside the database can tell.
    """
    rows = AuditEvent.objects.filter(chain_seq__gte=seq).order_by("chain_seq")
    prev = (
        AuditEvent.objects.filter(chain_seq=seq - 1).values_list("chain_hash", flat=True).first()
        or chain.chain_start().prev_hash
    )
    last_seq = seq - 1
    for event_id in list(rows.values_list("id", flat=True)):
        if changes:
            AuditEvent.objects.filter(pk=event_id).update(**changes)
        row = AuditEvent.objects.filter(pk=event_id).values(*chain.STORED_FIELDS).get()
        row["prev_hash"] = prev
        prev = chain.row_hash(row)
        AuditEvent.objects.filter(pk=event_id).update(prev_hash=row["prev_hash"], chain_hash=prev)
        last_seq = row["chain_seq"]
    ChainHead.objects.filter(pk=chain.HEAD_ID).update(seq=last_seq, hash=prev)


def truncate_after(seq: int) -> None:
    """Delete every row past chain_seq ``seq`` and move the head back to it: the chain still holds."""
    AuditEvent.objects.filter(chain_seq__gt=seq).delete()
    digest = AuditEvent.objects.filter(chain_seq=seq).values_list("chain_hash", flat=True).get()
    ChainHead.objects.filter(pk=chain.HEAD_ID).update(seq=seq, hash=digest)
