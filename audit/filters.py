"""The audit list's filters and the approval state of its rows, as the admin shows them.

A call held for an admin's decision keeps its row ``running`` while the tool waits, and
becomes ``pending`` ("Awaiting approval") only when the wait ends undecided. The list
shows what is true now instead: a row whose approval request is still undecided is
"Awaiting approval", whatever its stored status. The requests live in the hosts app,
which the audit app does not import; the model is looked up by name when it is installed.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest

from audit.models import AuditEvent

# The annotation ``with_approval_state`` adds: True while the row's request is undecided.
AWAITING = "awaiting_approval"
# A row held for approval whose request has since been decided or has expired.
HELD = "held"
HELD_LABEL = "Held for approval (since decided or expired)"


def with_approval_state(queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    """``queryset`` with ``awaiting_approval``: an undecided, unexpired request asked in this row."""
    if AWAITING in queryset.query.annotations:
        return queryset
    try:
        request_model = apps.get_model("hosts", "ApprovalRequest")
    except LookupError:
        return queryset.annotate(**{AWAITING: Q(pk__in=[])})
    undecided = request_model.objects.filter(
        audit_event_id=OuterRef("pk"), state="pending", expires_at__gt=Now()
    )
    # A batch of ssh_execute_many held for one request: its hosts' rows completed pending wait on it.
    batch_undecided = request_model.objects.filter(
        batch_id=OuterRef("batch_id"), state="pending", expires_at__gt=Now()
    ).exclude(batch_id="")
    awaiting = Q(Exists(undecided)) | (Q(Exists(batch_undecided)) & Q(status=AuditEvent.Status.PENDING))
    return queryset.annotate(**{AWAITING: ExpressionWrapper(awaiting, output_field=BooleanField())})


def awaiting_approval(event: AuditEvent) -> bool:
    """Whether ``event`` waits for a decision now (annotated by ``with_approval_state``, or looked up)."""
    value = getattr(event, AWAITING, None)
    if value is None:
        value = with_approval_state(AuditEvent.objects.filter(pk=event.pk)).values_list(AWAITING, flat=True)
        value = bool(value.first())
    return bool(value)


def shown_status(event: AuditEvent) -> tuple[str, str]:
    """(status, label) as the admin shows ``event``: a call waiting for an admin is awaiting approval."""
    if awaiting_approval(event):
        return AuditEvent.Status.PENDING, str(AuditEvent.Status.PENDING.label)
    if event.status == AuditEvent.Status.PENDING:
        return AuditEvent.Status.PENDING, HELD_LABEL
    return event.status, event.get_status_display()


class StatusFilter(admin.SimpleListFilter):
    """The status as it is now: a call waiting for an admin is "Awaiting approval", not "Running".

    The parameter keeps the stock filter's name (``status__exact``), so links made for it
    (the index's cards) still work.
    """

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*((value, str(label)) for value, label in AuditEvent.Status.choices), (HELD, HELD_LABEL)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        queryset = with_approval_state(queryset)
        if value == AuditEvent.Status.PENDING:
            return queryset.filter(**{AWAITING: True})
        if value == HELD:
            return queryset.filter(status=AuditEvent.Status.PENDING, **{AWAITING: False})
        if value == AuditEvent.Status.RUNNING:
            return queryset.filter(status=value, **{AWAITING: False})
        return queryset.filter(status=value)


class _NamesFilter(admin.SimpleListFilter):
    """The names that occur in one text column, and an entry for the rows where it is empty.

    The stock filter lists the empty value as a blank entry that nobody can read.
    """

    field_name = ""
    EMPTY = "-"
    empty_label = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = (
            AuditEvent.objects.order_by(self.field_name).values_list(self.field_name, flat=True).distinct()
        )
        return [*((name, name) for name in names if name), (self.EMPTY, self.empty_label)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if value == self.EMPTY:
            # Empty or NULL: the client column is nullable, the host name is not.
            return queryset.filter(Q(**{self.field_name: ""}) | Q(**{f"{self.field_name}__isnull": True}))
        return queryset.filter(**{self.field_name: value})


class HostNameFilter(_NamesFilter):
    """Host names; calls without a host (listing hosts) are "(no host)"."""

    title = "host name"
    parameter_name = "host_name__exact"
    field_name = "host_name"
    empty_label = "(no host)"


class ClientFilter(_NamesFilter):
    """Client names; calls without a client (an admin's Test connection, for one) are "(no client)"."""

    title = "client"
    parameter_name = "client__exact"
    field_name = "client"
    empty_label = "(no client)"


class BatchFilter(admin.SimpleListFilter):
    """The rows of one batch (``ssh_execute_many``): reached from a row's batch link, not listed.

    Batches are too many to offer as choices; the filter shows only the one selected.
    """

    title = "batch"
    parameter_name = "batch_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(batch_id=value) if value else queryset
