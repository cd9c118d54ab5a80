from django.apps import AppConfig


class SshcontrolConfig(AppConfig):
    """The project package doubles as an app: sessions model, checks, mcp_serve."""

    name = "sshcontrol"
    verbose_name = "SSH sessions and workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.backends.signals import connection_created

        from sshcontrol import checks  # noqa: F401  (registers the system checks)
        from sshcontrol.filemodes import private_sqlite_connection, secure_existing_sqlite

        # A database left 0644 by an earlier version is made owner-only before it is opened, so
        # the WAL/SHM files SQLite creates next (with the database's mode) are owner-only too.
        secure_existing_sqlite(settings.DATABASES["default"])
        connection_created.connect(private_sqlite_connection, dispatch_uid="sshcontrol-private-sqlite")
