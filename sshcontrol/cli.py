"""The ``sshcontrol`` console script: Django's management commands from any directory.

On the embedded default the SQLite database is created and migrated before the
command runs, so ``sshcontrol hosts add`` or ``sshcontrol mcp_serve`` work on a
fresh machine with no set-up step.
"""

from __future__ import annotations

import os
import sys

# Commands that must not trigger an automatic migration (they manage schema or need none).
_NO_AUTO_MIGRATE = {
    "migrate",
    "makemigrations",
    "sqlmigrate",
    "showmigrations",
    "help",
    "version",
    "check",
    "shell",
    "dbshell",
    "test",
    "squashmigrations",
}


def main(argv: list[str] | None = None) -> int:
    from sshcontrol.filemodes import restrict_umask

    # Before anything is written: the database, keys and transfers are nobody else's business.
    restrict_umask()
    args = list(sys.argv if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")
    import django
    from django.core.management import execute_from_command_line

    django.setup()
    command = args[1] if len(args) > 1 else "help"
    if args[1:] in ([], ["help"], ["-h"], ["--help"]):
        from sshcontrol.commandlist import overview

        sys.stdout.write(overview())
        return 0
    if command not in _NO_AUTO_MIGRATE and not command.startswith("-"):
        from sshcontrol.bootstrap import prepare_database

        prepare_database()
    try:
        execute_from_command_line(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``sshcontrol audit_export ... | head``): stop quietly, as a
        # shell tool does. stdout points at /dev/null so the interpreter's final flush of
        # what is still buffered cannot raise again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
