from django.apps import AppConfig


class SshcontrolConfig(AppConfig):
    """The project package doubles as an app: sessions model, checks, mcp_serve."""

    name = "sshcontrol"
    verbose_name = "SSH sessions and workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sshcontrol import checks  # noqa: F401  (registers the system checks)
