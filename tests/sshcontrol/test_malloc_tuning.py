"""Freed megabyte buffers are reused, not faulted in again on every call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A call's worth of work: a 1 MiB buffer made and freed, a hundred times over; the minor page
# faults it took are counted by the kernel (ru_minflt), not timed.
_PROGRAM = """
import resource, sys
sys.path.insert(0, {root!r})
if sys.argv[1] == "tuned":
    from sshcontrol.malloc_tuning import keep_freed_buffers
    assert keep_freed_buffers()
text = "0123456789" * (1 << 17)
text.encode().lower()  # the first one may fault: it is new memory either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    text.encode().lower()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(root=root), mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_tuned_malloc_reuses_freed_megabyte_buffers() -> None:
    untuned, tuned = _faults("plain"), _faults("tuned")
    # Untuned, glibc maps and unmaps each 1.25 MiB block: ~320 faults a round, 100 rounds.
    assert untuned > 10_000, untuned
    assert tuned < 1_000, tuned
