"""The ASGI application ``serve`` runs: the Django admin and its static files.

Static files are served straight from the installed Django admin package by Starlette
(already a dependency of the MCP SDK), so no ``collectstatic`` step or extra server is
needed on the embedded default.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import django.contrib.admin
from django.core.asgi import get_asgi_application
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp


def build_app() -> ASGIApp:
    admin_static = Path(django.contrib.admin.__file__).parent / "static" / "admin"
    return Starlette(
        routes=[
            Mount("/static/admin", app=StaticFiles(directory=admin_static), name="admin-static"),
            Mount("/", app=cast(ASGIApp, get_asgi_application())),
        ]
    )
