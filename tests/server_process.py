"""A server process the tests start as a user would (``mcp_serve``, ``serve``), sharing the test database.

The callers choose the command, the settings and how to tell that it answers; what every such
process needs (the repository on its path, its own data directory and home, the suite's field
keys, the test database) and where its output goes are here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.database import database_url

REPO = Path(__file__).resolve().parents[1]


def server_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of a server process with its data below ``tmp``; ``settings`` added last."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "SSHCONTROL_DATA_DIR": str(tmp / "data"),
        "SSHCONTROL_FIELD_KEYS": os.environ["SSHCONTROL_FIELD_KEYS"],
        "DATABASE_URL": database_url(),
        "SSHCONTROL_LOG_LEVEL": "INFO",
        **settings,
    }


def launch(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv``, its output (both streams) appended to ``log``, nothing on its stdin."""
    with log.open("ab") as out:  # the server keeps its own copy of the descriptor
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/"
        )
