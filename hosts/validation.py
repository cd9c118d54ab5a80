"""A model's ValidationError in one line, for the commands and the importer that report it."""

from __future__ import annotations

from django.core.exceptions import ValidationError


def validation_message(exc: ValidationError) -> str:
    """``field: message; ...``; errors of the whole object (``__all__``) without a field name."""
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{'' if field == '__all__' else field + ': '}{' '.join(msgs)}"
            for field, msgs in exc.message_dict.items()
        )
    return " ".join(exc.messages)
