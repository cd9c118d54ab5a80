"""The admin index's numbers and its pending approvals, computed when the page asks."""

from __future__ import annotations

from typing import Any

from django import template

from sshcontrol import dashboard

register = template.Library()


@register.simple_tag
def admin_dashboard() -> dashboard.Dashboard:
    return dashboard.build()


@register.simple_tag
def pending_approvals(user: Any) -> list[dashboard.PendingApproval]:
    """``{% pending_approvals request.user as approvals %}``: empty for an admin who may not see them.

    The band shows commands; a staff user without the view permission on approval
    requests must not read them on the index either.
    """
    if not (user.has_perm("hosts.view_approvalrequest") or user.has_perm("hosts.change_approvalrequest")):
        return []
    return dashboard.pending_approvals(user.get_username())
