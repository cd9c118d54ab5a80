"""A file tree inside and outside the transfer directory, and a process that races the fence.

Inside the root: ``race/up`` (a directory holding ``payload.txt``, benign), ``race/f.txt``
(a benign regular file) and ``race/down`` (an empty directory to download into). Outside it:
``secrets/payload.txt`` (a unique secret) and ``canary/`` (empty). The swapper process, for a
bounded time, keeps replacing ``race/up`` and ``race/down`` with symbolic links to
``secrets`` and ``canary`` and back, and ``race/f.txt`` with a link to the secret and back,
each swap a rename so every state is whole. A fence that checks a name and then opens it
again by name reads the secret or writes into the canary; one that walks descriptors
without following links only fails some calls.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.polling import wait_until

BENIGN = b"benign payload\n"

_SWAPPER = r"""
import os, sys, time
race, secrets_dir, canary, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
os.chdir(race)
end = time.monotonic() + seconds
swaps = 0
open("ready", "w").close()
while time.monotonic() < end:
    # Links for a moment, then the real entries for a moment: a check sees one, a use may see the other.
    for name, target in (("up", secrets_dir), ("down", canary)):
        os.rename(name, name + ".real")
        os.symlink(target, name + ".lnk")
        os.rename(name + ".lnk", name)
    os.symlink(os.path.join(secrets_dir, "payload.txt"), "f.lnk")
    os.rename("f.lnk", "f.txt")
    time.sleep(0.001)  # hold the hostile state a moment: the race's pace, not a wait
    for name in ("up", "down"):
        os.unlink(name)
        os.rename(name + ".real", name)
    with open("f.reg", "wb") as handle:
        handle.write(b"benign payload\n")
    os.rename("f.reg", "f.txt")
    time.sleep(0.001)  # and the benign state
    swaps += 1
print(swaps)
"""


@dataclass
class FenceRace:
    root: Path
    outside: Path

    @property
    def race(self) -> Path:
        return self.root / "race"

    @property
    def canary(self) -> Path:
        return self.outside / "canary"

    @property
    def secret(self) -> bytes:
        return (self.outside / "secrets" / "payload.txt").read_bytes()

    @classmethod
    def create(cls, root: Path, outside: Path) -> FenceRace:
        made = cls(root, outside)
        (outside / "secrets").mkdir(parents=True)
        (outside / "secrets" / "payload.txt").write_bytes(f"SECRET-{secrets.token_hex(16)}\n".encode())
        made.canary.mkdir()
        (made.race / "up").mkdir(parents=True)
        (made.race / "up" / "payload.txt").write_bytes(BENIGN)
        (made.race / "f.txt").write_bytes(BENIGN)
        (made.race / "down").mkdir()
        return made

    def start(self, seconds: float) -> subprocess.Popen[bytes]:
        """The swapper, running for ``seconds``; returns once it has started swapping."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SWAPPER,
                str(self.race),
                str(self.outside / "secrets"),
                str(self.canary),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
        )

        def started() -> bool:
            assert proc.poll() is None, "the swapper exited early"
            return (self.race / "ready").exists()

        wait_until(started, 10, "the swapper did not start")
        return proc

    def finish(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the swapper's own deadline; the number of swap rounds it made."""
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        return int(out)

    def written_outside(self) -> list[str]:
        """Everything that appeared outside the root: must stay empty."""
        found = [str(p) for p in self.canary.rglob("*")]
        found += [str(p) for p in (self.outside / "secrets").iterdir() if p.name != "payload.txt"]
        return found
