"""The admin index's numbers and its pending approvals, computed when the page asks."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.auth import get_permission_codename
from django.db.models import Model

from hosts.access_models import ApprovalRequest
from sshcontrol import dashboard

register = template.Library()


def may_view_model(user: Any, model: type[Model]) -> bool:
    """What the admin itself requires to list a model's rows: its view or change permission."""
    opts = model._meta
    return bool(
        user.has_perm(f"{opts.app_label}.{get_permission_codename('view', opts)}")
        or user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")
    )


@register.simple_tag
def admin_dashboard(user: Any) -> dashboard.Dashboard:
    """``{% admin_dashboard request.user as dashboard %}``: only the parts ``user`` may view.

    Host names, fingerprints, counts and the chain's state come from the hosts, host keys,
    sessions and audit log; a staff user without the view permission on one does not see
    what comes from it here either.
    """
    return dashboard.build(may_view=lambda model: may_view_model(user, model))


@register.simple_tag
def pending_approvals(user: Any) -> list[dashboard.PendingApproval]:
    """``{% pending_approvals request.user as approvals %}``: empty for an admin who may not see them.

    The band shows commands; a staff user without the view permission on approval
    requests must not read them on the index either.
    """
    if not may_view_model(user, ApprovalRequest):
        return []
    return dashboard.pending_approvals(user.get_username())
