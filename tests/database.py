"""The test database as a URL, for the processes a test starts (mcp_serve, workers)."""

from __future__ import annotations

from django.db import connection


def database_url() -> str:
    """The URL of the test database pytest-django created (SQLite file or PostgreSQL)."""
    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or "postgres"
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    where = f"{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{where}/{conf['NAME']}"
