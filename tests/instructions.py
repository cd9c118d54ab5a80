"""Instructions that pieces of Python code execute, counted by valgrind's callgrind.

A test that an algorithm is linear cannot time it: on a busy machine a 4x larger input has
been seen taking 15x as long (a neighbour, the host, the caches), and no bound between linear
and quadratic survives that. An instruction count is the same however busy the machine is, so
a bound between linear and quadratic can be tight and still never fail by chance.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A script ends a segment by calling this; callgrind dumps its counts after the libc call of
# the same name, which nothing else in a plain script calls.
MARKER = "os.getppid()"


def segments(script: str) -> list[int]:
    """Run ``script`` (Python source, run from the repository) under callgrind; the instructions of
    each segment it ends with ``os.getppid()``, in order (the first holds the interpreter's start)."""
    with tempfile.TemporaryDirectory(prefix="sshcontrol-callgrind-") as out:
        ran = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-after=getppid",
                f"--callgrind-out-file={out}/counts",
                sys.executable,
                "-c",
                script,
            ],
            cwd=REPO,
            # The same hash seed each run: dict and set layouts, and so the counts, repeat.
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr[-4000:]
        # counts.1, counts.2, ...: one per marker; "counts" itself is what followed the last.
        dumps = sorted(Path(out).glob("counts.*"), key=lambda path: int(path.suffix[1:]))
        return [_total(path) for path in dumps]


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise AssertionError(f"no totals line in {dump}")
