"""Where embedded state lives: one private directory, created on first use."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    raw = os.environ.get("SSHCONTROL_DATA_DIR") or str(Path.home() / ".sshcontrol")
    return Path(raw).expanduser().resolve()


def ensure_data_dir() -> Path:
    """Create the data directory with mode 0700 (owner only) if it does not exist yet."""
    path = data_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
