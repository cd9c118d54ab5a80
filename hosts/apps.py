from django.apps import AppConfig


class HostsConfig(AppConfig):
    """Inventory of hosts, encrypted credentials and pinned host keys."""

    name = "hosts"
    default_auto_field = "django.db.models.BigAutoField"
