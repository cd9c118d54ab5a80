"""Approval requests: a command a rule holds back until an admin decides.

Every state change is one conditional UPDATE (``state = pending`` or ``approved``), so two
admins deciding at once, or two callers picking up one approved request, cannot both win:
an approved request runs at most once. Nothing in the MCP surface reaches ``decide``; only
the admin's approval page (``hosts.admin.approval``) does. Who may decide is ``refusal``.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Model, Q
from django.utils import timezone

from audit import writer
from audit.models import AuditEvent
from hosts.access_models import ApprovalRequest, Grant, McpClient
from hosts.models import Host

State = ApprovalRequest.State


class ApprovalError(ValueError):
    """A decision that cannot be made (already decided, expired, self-approval)."""


def create(
    *,
    client_id: int,
    host: Host,
    command: str,
    working_directory: str,
    timeout: float | None,
    sudo: bool,
    stdin: str,
    reason: str,
    rule: str,
    session_id: str,
    audit_event_id: int | None,
    batch_id: str = "",
    batch_hosts: list[str] | None = None,
    batch_plan: dict[str, object] | None = None,
) -> ApprovalRequest:
    """A pending request; for a batch (``batch_id``), ``host`` is the first of ``batch_hosts``."""
    now = timezone.now()
    owner = McpClient.objects.filter(pk=client_id).values_list("owner", flat=True).first() or ""
    return ApprovalRequest.objects.create(
        client_id=client_id,
        client_owner=owner,
        host=host,
        session_id=session_id,
        command=command,
        working_directory=working_directory,
        timeout=timeout,
        sudo=sudo,
        stdin=stdin,
        reason=reason[:2000],
        rule=rule,
        requested_at=now,
        expires_at=now + timedelta(seconds=float(settings.APPROVAL_EXPIRY_SECONDS)),
        audit_event_id=audit_event_id,
        batch_id=batch_id,
        batch_hosts=batch_hosts or [],
        batch_plan=batch_plan or {},
    )


def expire_overdue(request_id: int | None = None) -> int:
    """Close requests past their expiry (pending or approved and never run); wipe their stdin.

    With ``request_id``, only that request: a caller about one request (deciding, polling,
    picking up) need not write across the whole table.
    """
    overdue = ApprovalRequest.objects.filter(
        state__in=[State.PENDING, State.APPROVED], expires_at__lte=timezone.now()
    )
    if request_id is not None:
        overdue = overdue.filter(pk=request_id)
    return overdue.update(state=State.EXPIRED, stdin="")


def decide(request_id: int, admin_username: str, approve: bool, comment: str = "") -> ApprovalRequest:
    """Approve or deny a pending request as ``admin_username``. Raises ApprovalError.

    The owner of the requesting client cannot decide: the person who runs an agent must
    not be the one who lets it do the dangerous thing.
    """
    if not admin_username:
        raise ApprovalError("a decision needs the name of the admin who makes it")
    expire_overdue(request_id)
    request = ApprovalRequest.objects.select_related("client").filter(pk=request_id).first()
    if request is None:
        raise ApprovalError(f"approval request {request_id} does not exist")
    refused = refusal(request, admin_username)
    if refused:
        raise ApprovalError(refused)
    now = timezone.now()
    changed = ApprovalRequest.objects.filter(pk=request_id, state=State.PENDING, expires_at__gt=now).update(
        state=State.APPROVED if approve else State.DENIED,
        decided_by=admin_username[:150],
        decided_at=now,
        comment=comment,
        **({} if approve else {"stdin": ""}),
    )
    request.refresh_from_db()
    if not changed:
        raise ApprovalError(f"approval request {request_id} is {request.state}, not pending")
    return request


def claim(request_id: int, client_id: int, event_id: int | None = None) -> ApprovalRequest | None:
    """Take an approved request of this client to run it, exactly once (None when it cannot run).

    ``event_id`` (the audit row of the call that will run it) is stored in the same UPDATE, so
    a caller whose reply was lost can tell its own claim from another's.
    """
    changed = ApprovalRequest.objects.filter(
        pk=request_id, client_id=client_id, state=State.APPROVED, expires_at__gt=timezone.now()
    ).update(state=State.EXECUTED, **({"executed_event_id": event_id} if event_id is not None else {}))
    if not changed:
        return None
    return ApprovalRequest.objects.select_related("host").get(pk=request_id)


def finish(request: ApprovalRequest, executed_event_id: int) -> None:
    """Record which call ran the request and drop the stdin kept for it."""
    ApprovalRequest.objects.filter(pk=request.pk).update(executed_event_id=executed_event_id, stdin="")


def get_for_client(request_id: int, client_id: int) -> ApprovalRequest | None:
    expire_overdue(request_id)
    return ApprovalRequest.objects.select_related("host").filter(pk=request_id, client_id=client_id).first()


def pending() -> list[ApprovalRequest]:
    """Undecided requests, oldest first (what the admin index shows at the top)."""
    expire_overdue()
    return list(
        ApprovalRequest.objects.filter(state=State.PENDING)
        .select_related("client", "host")
        .order_by("requested_at")
    )


def is_owner(owner: str, admin_username: str) -> bool:
    """Whether this admin is the person named as a client's owner: by username, or by e-mail.

    A client bound to an identity provider's subject has that person's name claim (usually
    their e-mail address) as owner (``hosts.idp``), so an admin account with that e-mail
    cannot decide what their own agent asked for.
    """
    owner = owner.strip()
    if not owner or not admin_username:
        return False
    if owner == admin_username:
        return True
    users = get_user_model().objects
    email = users.filter(**{get_user_model().USERNAME_FIELD: admin_username}).values_list("email", flat=True)
    found = email.first()
    return bool(found) and str(found).strip().lower() == owner.lower()


def refusal(request: ApprovalRequest, admin_username: str) -> str:
    """Why ``admin_username`` may not decide ``request`` ("" when they may).

    Barred: the client's owner when the request was made, its owner now, and whoever changed
    the client's owner or groups, or one of its grants, while the request was pending.
    """
    name = request.client.name
    if is_owner(request.client.owner, admin_username):
        return f"{admin_username} owns client '{name}' and cannot decide its requests"
    if is_owner(request.client_owner, admin_username):
        return f"{admin_username} owned client '{name}' when it made this request and cannot decide it"
    if admin_username in request.barred:
        return (
            f"{admin_username} changed client '{name}' or one of its grants while this request was"
            " pending and cannot decide it"
        )
    return ""


def clients_of_grant(grant: Grant) -> set[int]:
    """The clients a grant gives rights to: its client, or every client of its group."""
    if grant.client_id is not None:
        return {grant.client_id}
    if grant.group_id is not None:
        return set(McpClient.objects.filter(groups=grant.group_id).values_list("pk", flat=True))
    return set()


def _bar(request: ApprovalRequest, author: str) -> None:
    """Add ``author`` to the request's barred deciders (a conditional UPDATE, retried if another won)."""
    current = request.barred_deciders
    while author not in [name for name in current.split("\n") if name]:
        # Every name is framed by newlines so that a lookup matches whole names only.
        changed = ApprovalRequest.objects.filter(pk=request.pk, barred_deciders=current).update(
            barred_deciders=f"{current or chr(10)}{author}\n"
        )
        if changed:
            return
        current = (
            ApprovalRequest.objects.filter(pk=request.pk).values_list("barred_deciders", flat=True).get()
        )


def record_change(*, author: str, change: str, client_ids: set[int]) -> list[int]:
    """Record that ``author`` changed what bears on these clients' pending requests; bar them from those.

    A change of a client's owner or of a grant decides who may approve and what an approved
    command may do, so it is written to the audit log (tool ``admin_change``) whenever it
    touches a pending request, and its author may no longer decide that request. Returns the
    ids of the requests concerned (none: nothing is recorded).
    """
    if not author or not client_ids:
        return []
    expire_overdue()
    pending = list(
        ApprovalRequest.objects.filter(client_id__in=client_ids, state=State.PENDING)
        .select_related("client")
        .order_by("pk")
    )
    if not pending:
        return []
    for request in pending:
        _bar(request, author)
    return _audit(author, change, pending)


def _audit(author: str, change: str, pending: list[ApprovalRequest]) -> list[int]:
    ids = [request.pk for request in pending]
    event_id = writer.begin(
        tool="admin_change",
        actor=f"admin:{author}",
        transport="admin",
        client=", ".join(sorted({request.client.name for request in pending})),
        details={"change": change, "pending_requests": ids, "barred_from_deciding": author},
    )
    writer.complete(event_id, status=AuditEvent.Status.OK)
    return ids


def bar_renamed_user(sender: type[Model], instance: AbstractBaseUser, **kwargs: object) -> None:
    """An admin renamed while barred from deciding requests stays barred under the new name.

    Owners and barred deciders are usernames: without this, the owner of a client could rename
    their own account and decide its requests. Connected to the user model's ``pre_save``.
    """
    if instance.pk is None:
        return
    field = str(getattr(sender, "USERNAME_FIELD", "username"))
    old = sender._default_manager.filter(pk=instance.pk).values_list(field, flat=True).first()
    new = instance.get_username()
    if not old or old == new:
        return
    expire_overdue()
    pending = list(
        ApprovalRequest.objects.filter(state=State.PENDING)
        .filter(Q(client_owner=old) | Q(client__owner=old) | Q(barred_deciders__contains=f"\n{old}\n"))
        .select_related("client")
        .order_by("pk")
    )
    # The clients the account owns follow it: otherwise an owner renamed while nothing waits
    # would no longer be the owner of the requests made next.
    owned = list(McpClient.objects.filter(owner=old).order_by("name").values_list("pk", "name"))
    McpClient.objects.filter(pk__in=[pk for pk, _ in owned]).update(owner=new)
    change = f"admin user '{old}' renamed to '{new}'"
    if owned:
        change += f"; the clients they owned follow: {', '.join(name for _, name in owned)}"
    if pending:
        for request in pending:
            _bar(request, new)
        _audit(new, change, pending)
    elif owned:
        event_id = writer.begin(
            tool="admin_change",
            actor=f"admin:{new}",
            transport="admin",
            client=", ".join(name for _, name in owned),
            details={"change": change, "pending_requests": []},
        )
        writer.complete(event_id, status=AuditEvent.Status.OK)
