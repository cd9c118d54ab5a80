"""What the admin's batch page shows: one ``ssh_execute_many`` call, every host of it on one page.

The counts by status, then the hosts grouped by identical (exit status, stdout, stderr), as
the tool's result groups them, so 200 hosts that said the same thing read as one entry and
the ones that differ stand out; each host links to its own row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.urls import reverse

from audit import filters
from audit.models import AuditEvent


def summary(events: Sequence[AuditEvent], colors: Mapping[str, str]) -> dict[str, Any]:
    """The template's context for the batch made of ``events`` (its rows, oldest first)."""
    counts: dict[str, int] = {}
    groups: dict[tuple[str, int | None, str, str], list[dict[str, Any]]] = {}
    hosts: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for event in events:
        status, label = filters.shown_status(event)
        counts[label] = counts.get(label, 0) + 1
        item = {
            "event": event,
            "host": event.host_name or str(event.details.get("host_requested", "?")),
            "url": reverse("admin:audit_auditevent_change", args=[event.pk]),
            "status_label": label,
            "status_color": colors.get(status, "inherit"),
        }
        hosts.append(item)
        key = (label, event.exit_status, event.stdout, event.stderr if event.exit_status is not None else "")
        if event.exit_status is not None or event.status == AuditEvent.Status.TIMEOUT:
            groups.setdefault(key, []).append(item)
        else:
            others.append(item)
    first = events[0]
    return {
        "command": first.command,
        "client": first.client or first.actor,
        "started_at": first.started_at,
        "counts": sorted(counts.items(), key=lambda kv: -kv[1]),
        "total": len(events),
        "groups": [
            {"status_label": k[0], "exit_status": k[1], "stdout": k[2], "stderr": k[3], "hosts": v}
            for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))
        ],
        "others": others,
    }
