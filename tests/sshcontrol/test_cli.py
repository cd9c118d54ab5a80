"""The ``sshcontrol`` console script as a shell user meets it, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshcontrol.commandlist import GROUPS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh data directory: the embedded database is created on first use."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "SSHCONTROL_DATA_DIR": str(tmp_path / "data"),
        "SSHCONTROL_LOG_LEVEL": "WARNING",
        "SSHCONTROL_FIELD_KEYS": os.environ["SSHCONTROL_FIELD_KEYS"],  # no first-use key notice
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sshcontrol", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
    )


def test_it_lists_its_own_commands_grouped_one_line_each(env: dict[str, str]) -> None:
    bare = cli(env)
    assert bare.returncode == 0 and bare.stderr == ""
    lines = bare.stdout.splitlines()
    assert lines[0] == "Usage: sshcontrol COMMAND [options]"
    for title, commands in GROUPS:
        assert f"{title}:" in lines
        for name, summary in commands:
            assert f"  {name.ljust(18)}  {summary}" in lines
    assert "startproject" not in bare.stdout and "makemigrations" not in bare.stdout
    assert all(len(line) <= 100 for line in lines)
    assert cli(env, "help").stdout == bare.stdout
    # Every listed command exists, and Django's full list is still there when asked for.
    everything = cli(env, "help", "--commands").stdout.split()
    assert {name for _, commands in GROUPS for name, _ in commands} <= set(everything)
    assert "startproject" in everything


def test_it_stops_quietly_when_the_reader_goes_away(env: dict[str, str]) -> None:
    # Enough rows that the export outgrows the pipe's buffer after the reader has gone.
    assert cli(env, "migrate").returncode == 0
    made = cli(
        env,
        "shell",
        "-c",
        "from audit import writer\n"
        "for n in range(400): writer.begin(tool='t', actor='a', transport='cli', command='x' * 600)",
    )
    assert made.returncode == 0, made.stderr
    export = subprocess.Popen(
        [sys.executable, "-m", "sshcontrol", "audit_export", "--format", "jsonl"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
    )
    assert export.stdout is not None and export.stderr is not None
    assert export.stdout.readline().startswith(b"{")
    export.stdout.close()  # what `| head -1` does after its line
    returncode = export.wait(60)
    stderr = export.stderr.read().decode()
    export.stderr.close()
    assert returncode == 1, stderr
    assert stderr == ""
