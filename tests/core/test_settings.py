"""Settings from the environment, system checks, the data directory and the console script."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sshcontrol.env import EnvError, envbool, envint, envlist, envsecret

REPO = Path(__file__).resolve().parents[2]


def run_cli(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, from an unrelated directory, on a fresh data directory."""
    script = Path(sys.executable).parent / "sshcontrol"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SSHCONTROL_DATA_DIR": str(tmp_path / "data"),
        **extra_env,
    }
    return subprocess.run(
        [str(script), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )


def test_it_reads_typed_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    assert envbool("X_BOOL", False) is True
    assert envint("X_INT", 1) == 42
    assert envint("X_MISSING", 7) == 7
    monkeypatch.setenv("X_INT", "many")
    with pytest.raises(EnvError, match="X_INT must be an integer"):
        envint("X_INT", 1)
    monkeypatch.setenv("X_INT", "-5")
    with pytest.raises(EnvError, match="at least 0"):
        envint("X_INT", 1, minimum=0)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert envsecret("X_SECRET") == "s3cret"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(EnvError, match="cannot be read"):
        envsecret("X_SECRET")


def test_it_reads_comma_separated_lists_without_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_LIST", " a.example:* , ,b.example:8000,")
    assert envlist("X_LIST") == ["a.example:*", "b.example:8000"]
    assert envlist("X_UNSET_LIST", "c, d") == ["c", "d"]


def test_it_creates_a_private_data_directory_and_database_on_first_use(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "hosts", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / "sshcontrol.sqlite3").exists()
    for name in ("field_keys", "secret_key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert "generated a field encryption key" in done.stderr


def test_it_reports_bad_settings_as_system_checks_with_ids(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "check", SSHCONTROL_MAX_OUTPUT_BYTES="lots", SSHCONTROL_DEFAULT_TIMEOUT="9000")
    assert done.returncode != 0
    assert (
        "sshcontrol.E003" in done.stderr and "SSHCONTROL_MAX_OUTPUT_BYTES must be an integer" in done.stderr
    )
    assert "sshcontrol.E011" in done.stderr


def test_it_passes_its_checks_with_no_configuration(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "check")
    assert done.returncode == 0, done.stderr
