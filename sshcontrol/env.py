"""Typed readers for environment settings.

Settings come only from the environment so that the same code runs embedded (no
configuration at all) and deployed (every value from a unit file or a secret store).
Each helper returns the default when the variable is unset or empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvError(ValueError):
    """An environment variable holds a value of the wrong shape."""


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name) or default


def envlist(name: str, default: str = "") -> list[str]:
    """A comma-separated list; blanks around the commas and empty items are dropped."""
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise EnvError(f"{name} must be true or false, not {raw!r}")


def _envnumber(name: str, default: N, minimum: N | None, cast: Callable[[str], N], kind: str) -> N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError as exc:
        raise EnvError(f"{name} must be {kind}, not {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise EnvError(f"{name} must be at least {minimum}, not {value}")
    return value


def envint(name: str, default: int, minimum: int | None = None) -> int:
    return _envnumber(name, default, minimum, int, "an integer")


def envfloat(name: str, default: float, minimum: float | None = None) -> float:
    return _envnumber(name, default, minimum, float, "a number")


def envsecret(name: str, default: str = "") -> str:
    """Read a secret from NAME, or from the file named by NAME_FILE (systemd credentials, k8s secrets)."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise EnvError(f"{name}_FILE points at {path!r}, which cannot be read: {exc.strerror}") from exc
    return default
