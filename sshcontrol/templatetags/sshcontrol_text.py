"""``{% load sshcontrol_text %}``: text from agents and hosts shown as the shell reads it."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from hosts import visible as visible_text

register = template.Library()


@register.filter
def visible(value: object) -> SafeString:
    """``{{ command|visible }}``: escaped, hidden characters as highlighted ``<U+XXXX>``."""
    return visible_text.visible_html("" if value is None else str(value))


@register.filter
def hidden_characters(value: object) -> list[str]:
    """``{{ command|hidden_characters }}``: the hidden characters it contains, described (for warnings)."""
    return visible_text.hidden_characters("" if value is None else str(value))
