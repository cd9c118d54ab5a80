"""First-use preparation of the embedded database."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hosts import crypto
from sshcontrol import filemodes
from sshcontrol.datadir import ensure_data_dir

log = logging.getLogger(__name__)


def prepare_database() -> None:
    """Apply pending migrations on the embedded SQLite database.

    A deployed PostgreSQL database is migrated by the operator, deliberately: the
    schema of a shared database should not change because one client started.
    """
    if not settings.EMBEDDED_DATABASE:
        return
    ensure_data_dir()
    database = filemodes.sqlite_path(settings.DATABASES["default"])
    if database is not None:
        filemodes.secure_sqlite(database)  # created 0600 before SQLite first opens it
    # Create the field key now (with its warning) rather than at the first stored secret,
    # so a new user sees where it is and can back it up before it matters.
    crypto.configured_keys()
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        log.info("creating or upgrading the embedded database at %s", settings.DATABASES["default"]["NAME"])
        call_command("migrate", interactive=False, verbosity=0)
