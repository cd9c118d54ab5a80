"""``{% admin_dashboard as dashboard %}``: the admin index's numbers, computed when the page asks."""

from __future__ import annotations

from django import template

from sshcontrol import dashboard

register = template.Library()


@register.simple_tag
def admin_dashboard() -> dashboard.Dashboard:
    return dashboard.build()
