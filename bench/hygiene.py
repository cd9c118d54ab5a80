"""What cleaning a page of output costs: ms per MiB of redaction, output hygiene and the fence.

Every byte a model reads passes ``audit.redaction.redact`` (where it is kept) and
``audit.output_hygiene.clean`` (in mcp_serve), and a markdown result fences it. Four kinds of
output, 1 MiB each, built from what every machine has:

- ``digits``: ``bench/output.py``'s 101-byte lines of digits (nothing to find);
- ``python``: the standard library's source (words like ``token``, ``api``, ``system``, backticks);
- ``ls -lR``: a listing of ``/usr`` (every line has ``--``, some names hold cue words);
- ``non-ascii``: the Python source with an accented word and a check mark every 20 lines.

Best of seven, in this process. To compare with an older tree, run it from both:

    .venv/bin/python bench/hygiene.py
    (cd /tmp/old && PYTHONPATH=/tmp/old /path/to/.venv/bin/python /path/to/bench/hygiene.py)
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1 << 20


def corpora() -> dict[str, str]:
    digits = ("0123456789" * 10 + "\n") * (MIB // 101 + 1)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    source = "".join(p.read_text(errors="replace") for p in sorted(stdlib.glob("*.py"))[:200])
    listing = subprocess.run(["ls", "-lR", "/usr"], capture_output=True, text=True, check=False).stdout
    lines = source.splitlines(keepends=True)
    accented = "".join(f"café ✓ {line}" if i % 20 == 0 else line for i, line in enumerate(lines))
    return {
        "digits": digits[:MIB],
        "python": source[:MIB],
        "ls -lR": listing[:MIB],
        "non-ascii": accented[:MIB],
    }


def best_ms(fn: Callable[[str], object], text: str, runs: int = 7) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    root = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")
    import django

    django.setup()
    from audit.output_hygiene import clean
    from audit.redaction import redact
    from sshcontrol.mcp.render import _fence

    print(f"tree {root}; ms per MiB, best of 7; load {os.getloadavg()[0]:.1f}")
    print(f"{'output':10} {'redact':>8} {'clean':>8} {'fence':>8}")
    for name, text in corpora().items():
        redacting = best_ms(lambda t: redact(t, ("s3cret-pass",)), text)
        print(f"{name:10} {redacting:8.1f} {best_ms(clean, text):8.1f} {best_ms(_fence, text):8.1f}")


if __name__ == "__main__":
    main()
