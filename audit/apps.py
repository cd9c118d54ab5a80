from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The append-only audit log."""

    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"
