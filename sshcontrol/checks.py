"""System checks for configuration mistakes, reported with ids by ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from sshcontrol import filemodes


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = [
        Error(message, id=check_id) for check_id, message in settings.SETTINGS_ERRORS
    ]
    if settings.MAX_TIMEOUT < settings.DEFAULT_TIMEOUT:
        messages.append(
            Error(
                "SSHCONTROL_DEFAULT_TIMEOUT is larger than SSHCONTROL_MAX_TIMEOUT.",
                hint="Lower the default or raise the maximum.",
                id="sshcontrol.E011",
            )
        )
    if settings.BROKER_URL and settings.EMBEDDED_DATABASE:
        messages.append(
            Warning(
                "SSHCONTROL_BROKER_URL is set but the database is the embedded SQLite file.",
                hint="Workers on other machines cannot share SQLite; set DATABASE_URL to PostgreSQL.",
                id="sshcontrol.W001",
            )
        )
    if not settings.FIELD_KEYS and not settings.EMBEDDED_DATABASE:
        messages.append(
            Error(
                "SSHCONTROL_FIELD_KEYS is not set, and the database is not the embedded one.",
                hint="Generate a key with `sshcontrol generate_field_key` and set SSHCONTROL_FIELD_KEYS "
                "(or SSHCONTROL_FIELD_KEYS_FILE) on every process.",
                id="sshcontrol.E012",
            )
        )
    return messages


def exposed_data() -> list[filemodes.Exposure]:
    """The data directory, its secrets and the SQLite database's files, where other users can reach them."""
    return filemodes.exposed(settings.DATA_DIR, filemodes.sqlite_path(settings.DATABASES["default"]))


@register()
def check_private_files(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    found = exposed_data()
    if not found:
        return []
    return [
        Error(
            "; ".join(e.describe() for e in found) + ". Other local users could read the database "
            "(admin sessions, audit rows, encrypted credentials) or the keys.",
            hint=f"Run: {filemodes.fix_command(found)}",
            id="sshcontrol.E040",
        )
    ]
