"""The embedded default's job runner: one detached process per ``ssh_start_job``.

On the embedded default the SSH sessions live in ``mcp_serve`` and die with it; a job
started with ``ssh_start_job`` must not. So ``mcp_serve`` writes the job's row and starts
``python -m sshcontrol.jobrunner JOB_ID`` in a session of its own (``start_new_session``:
neither a signal to ``mcp_serve``'s process group nor the client closing its stdio reaches
it). The runner opens its own connection to the job's host (credentials decrypted here,
the pinned host key verified as for any session), runs the command with the same code as
any command (``sshcontrol.tasks.run_detached_job``), keeps its output in the same data
directory, completes the job and audit rows, and exits.

The command's stdin (never stored) comes through the runner's own stdin pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import quote, urlsplit

RUNNER_STOPPED = "cancelled by sshcontrol: its job runner was stopped (SIGTERM)"


def _database_env() -> dict[str, str]:
    """The runner uses this process's database (in a test run, the test database too)."""
    from django.db import connection

    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return {"DATABASE_URL": f"sqlite:///{conf['NAME']}"}
    url = os.environ.get("DATABASE_URL", "")
    if url and urlsplit(url).path.lstrip("/") == conf["NAME"]:
        return {}
    user = quote(conf.get("USER") or "", safe="")
    password = f":{quote(conf['PASSWORD'], safe='')}" if conf.get("PASSWORD") else ""
    where = f"{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}"
    return {"DATABASE_URL": f"postgres://{user}{password}@{where}/{conf['NAME']}"}


def spawn(job_id: str, stdin: str | None) -> int:
    """Start the runner for ``job_id`` (its row is written); returns its process id."""
    from django.conf import settings

    log_path = Path(settings.DATA_DIR) / "job-runner.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sshcontrol.jobrunner",
                job_id,
                *(["--stdin"] if stdin is not None else []),
            ],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            env={**os.environ, **_database_env(), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    if stdin is not None:
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(stdin.encode("utf-8", "surrogatepass"))
    # Reaped when it exits, so no zombie waits for this server to end.
    threading.Thread(target=proc.wait, name=f"sshcontrol-reap-{proc.pid}", daemon=True).start()
    return proc.pid


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[1].startswith("job_"):
        sys.stderr.write("usage: python -m sshcontrol.jobrunner JOB_ID [--stdin]\n")
        return 2
    job_id = argv[1]
    stdin = sys.stdin.buffer.read().decode("utf-8", "surrogatepass") if "--stdin" in argv[2:] else None

    from sshcontrol.filemodes import restrict_umask
    from sshcontrol.malloc_tuning import keep_freed_buffers

    restrict_umask()
    keep_freed_buffers()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")
    import django

    django.setup()
    from sshcontrol import tasks
    from sshlib.sessions import registry

    def stop(signum: int, frame: FrameType | None) -> None:
        # A stopping machine: the command is cancelled (its process group killed), rows completed.
        registry.cancel_all(RUNNER_STOPPED)

    signal.signal(signal.SIGTERM, stop)
    tasks.run_detached_job(job_id, stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
