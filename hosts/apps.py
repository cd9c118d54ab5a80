from django.apps import AppConfig


class HostsConfig(AppConfig):
    """Inventory of hosts, encrypted credentials and pinned host keys."""

    name = "hosts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import pre_save

        from hosts.approvals import bar_renamed_user

        pre_save.connect(bar_renamed_user, sender=get_user_model(), dispatch_uid="approvals-bar-renamed-user")
