"""``serve``: the admin in the browser, on the embedded default or a deployment.

On first start, when no administrator exists, one called ``admin`` is created with a
random password that is written to ``initial_admin_password`` in the data directory
(mode 0600) and shown once on stderr. Change it after logging in.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import uvicorn
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sshcontrol.datadir import ensure_data_dir
from sshcontrol.httplimits import uvicorn_guard


def parse_bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise CommandError(f"--bind must look like 127.0.0.1:8000, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def ensure_admin_user(stderr: Any) -> None:
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return
    password = secrets.token_urlsafe(18)
    users.objects.create_superuser("admin", email="", password=password)
    path = ensure_data_dir() / "initial_admin_password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, 0o600)  # a file left by an earlier run keeps its mode on O_TRUNC
        handle.write(password + "\n")
    stderr.write(
        f"Created administrator 'admin' with password {password} (also in {path}). Change it after login.\n"
    )


class Command(BaseCommand):
    help = "Serve the admin site (and static files) with uvicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000", help="address:port to listen on")
        parser.add_argument(
            "--no-create-admin", action="store_true", help="do not create a first administrator"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = parse_bind(options["bind"])
        if not options["no_create_admin"]:
            ensure_admin_user(self.stderr)
        self.stderr.write(
            f"sshcontrol admin on http://{host}:{port}/admin/ ; MCP clients run `sshcontrol mcp_serve`\n"
        )
        from sshcontrol.admin_asgi import build_app

        app, limits = uvicorn_guard(build_app())
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            forwarded_allow_ips=settings.TRUSTED_PROXIES,
            **limits,
        )
