"""The command line that starts one sshcontrol Celery worker, for the tests and the benchmarks.

``--pool threads``: a worker holds live SSH sessions in its own memory, so tasks must run as
threads of one process (a prefork pool would scatter a session's calls across child processes).
``--without-gossip --without-mingle --without-heartbeat``: sshcontrol tracks worker liveness with
its own heartbeat in the database, so Celery's worker-to-worker chatter is unused and only adds
start-up time.
"""

from __future__ import annotations

import sys


def worker_command(name: str, concurrency: int) -> list[str]:
    """``celery -A sshcontrol worker`` named ``name`` with ``concurrency`` threads, logging warnings."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "sshcontrol",
        "worker",
        "--pool",
        "threads",
        "-c",
        str(concurrency),
        "-n",
        name,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]
