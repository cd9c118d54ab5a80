"""System checks for configuration mistakes, reported with ids by ``manage.py check``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.db import DatabaseError, transaction

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
    if settings.MAX_FOREGROUND_SECONDS < settings.FOREGROUND_SECONDS:
        messages.append(
            Error(
                "SSHCONTROL_FOREGROUND_SECONDS is larger than SSHCONTROL_MAX_FOREGROUND_SECONDS.",
                hint="Lower the foreground limit or raise its maximum.",
                id="sshcontrol.E074",
            )
        )
    if settings.JOB_RETENTION_SECONDS > settings.OUTPUT_RETENTION_SECONDS:
        messages.append(
            Warning(
                "SSHCONTROL_JOB_RETENTION_SECONDS is longer than SSHCONTROL_OUTPUT_RETENTION_SECONDS.",
                hint="A finished job would outlive its kept output; make the job retention the shorter.",
                id="sshcontrol.W075",
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
    from sshcontrol.mcp.oauth import config_problems  # here: it imports the models

    messages += [Error(problem, id="sshcontrol.E064") for problem in config_problems()]
    from sshcontrol.admin_sso import config_problems as sso_problems

    messages += [Error(problem, id="sshcontrol.E065") for problem in sso_problems()]
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
            hint=filemodes.fix_command(found),
            id="sshcontrol.E040",
        )
    ]


@register()
def check_sudo_passwords(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """sshcontrol.W020: a sudo password some client may use while a client without sudo could capture it.

    Reads the inventory, so it is skipped while the database is missing or not yet migrated.
    """
    if databases is not None and "default" not in databases:
        return []
    if settings.EMBEDDED_DATABASE and not Path(settings.DATABASES["default"]["NAME"]).exists():
        return []  # nothing registered yet, and connecting would create the file
    from hosts import sudo_rule

    try:
        with transaction.atomic():
            entries = sudo_rule.exposed_sudo_hosts(sudo_rule.load_facts())
    except DatabaseError:
        return []
    return [
        Warning(
            line,
            hint="Give those clients sudo there, take away their execute and write permissions on that "
            "account, or use a separate login account for sudo; see " + sudo_rule.DOC_POINTER + ".",
            id=sudo_rule.CHECK_ID,
        )
        for line in sudo_rule.warning_lines(entries)
    ]


@register(deploy=True)
def check_shared_transfers(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """sshcontrol.E085: shared storage is configured, and a live worker does not see this transfer directory.

    Only under ``check --deploy``: it sends a task to every live worker and waits for them.
    """
    if not (settings.TRANSFER_SHARED and settings.BROKER_URL):
        return []
    from sshcontrol import holders, shared_storage
    from sshcontrol.celery_dispatch import CeleryDispatcher

    try:
        live = holders.live_workers()
    except DatabaseError as exc:
        return [
            Error(
                f"SSHCONTROL_TRANSFER_SHARED is set, and the workers cannot be listed: {exc}",
                id="sshcontrol.E085",
            )
        ]
    if not live:
        return [
            Error(
                "SSHCONTROL_TRANSFER_SHARED is set, and no worker runs to check it against.",
                hint="Start the workers and run `sshcontrol check --deploy` again.",
                id="sshcontrol.E089",
            )
        ]
    dispatcher = CeleryDispatcher()
    problems = [shared_storage.probe(node, partial(dispatcher.read_probe, node)) for node in sorted(live)]
    return [
        Error(problem, hint='See docs/deploy.md, "Transfers across machines".', id="sshcontrol.E085")
        for problem in problems
        if problem
    ]
