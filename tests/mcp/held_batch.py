"""A batch caught while it runs: commands that start and wait for the test, beside a host that cannot start.

For the write-before-act checks of ``ssh_execute_many`` (each host's audit row open while its
command runs, its process group recorded, the unreachable host's row completed meanwhile), on
either batch engine.
"""

from __future__ import annotations

import glob
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

from audit.models import AuditEvent
from hosts.models import Host
from sshcontrol.models import RemoteCommand
from tests.polling import wait_until
from tests.sshd import free_port

UNREACHABLE = "closed"


def hosts_and_one_unreachable(
    make_host: Callable[..., Any], prefix: str, count: int
) -> tuple[list[Host], list[str]]:
    """``count`` hosts on the suite's sshd, and host ``closed`` on a port nothing listens on.

    Returns the reachable hosts, and every name to call (the unreachable one last).
    """
    running: list[Host] = [make_host(f"{prefix}{i}") for i in range(count)]
    closed = make_host(UNREACHABLE)
    closed.port = free_port()  # nothing listens there: its command can never start
    closed.save(update_fields=["port"])
    return running, [h.name for h in running] + [UNREACHABLE]


class HeldCommand:
    """A command that says it started (a file per run, on loopback this machine's /tmp), then
    waits until the test lets it end."""

    def __init__(self) -> None:
        self.base = f"/tmp/sshc-held-{uuid.uuid4().hex}"
        self.text = f"touch {self.base}.started.$$; until [ -e {self.base}.go ]; do sleep 0.05; done"

    def wait_started(self, count: int) -> None:
        wait_until(lambda: len(glob.glob(f"{self.base}.started.*")) == count, 30, "every command started")

    def release(self) -> None:
        subprocess.run(["touch", f"{self.base}.go"], check=True)

    def remove_files(self) -> None:
        subprocess.run(["sh", "-c", f"rm -f {self.base}.*"], check=False)


def process_groups_recorded(count: int) -> dict[int | None, int]:
    """Audit row id -> host id of the running commands' process groups, once ``count`` are recorded."""

    def recorded() -> dict[int | None, int]:
        found = dict(RemoteCommand.objects.values_list("audit_event_id", "host_id"))
        return found if len(found) == count else {}

    return wait_until(recorded, 15, "every running command's process group recorded")


def completed(event_id: int, message: str) -> AuditEvent | None:
    """The audit row ``event_id`` once it is no longer running."""
    return wait_until(
        lambda: AuditEvent.objects.exclude(status=AuditEvent.Status.RUNNING).filter(pk=event_id).first(),
        30,
        message,
    )
