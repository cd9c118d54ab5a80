"""The work of ``ssh_copy``: host to host without a local file, to one destination or many.

One copy is ``HostCall.copy_here`` on the destination's call, which asks the dispatcher:

- embedded default, or one worker holding both sessions: one task in that process
  (``tasks.copy``, ``sshlib/remote_copy.py``: SFTP read streamed into SFTP write);
- distributed, sessions on two workers: a download on the source's worker streamed through
  the broker into an upload on the destination's (``sshcontrol/copy_relay.py``).

A copy to many hosts (``ssh_copy_many``) is a batch of ``fleet.run_batch`` whose per-host
operation is :class:`CopyEach`: **one read of the source per destination**, each its own
copy as above. Chosen over one read fanned out to every destination because every
destination then stands alone: a slow destination does not hold back the others (a shared
read goes at the pace of the slowest), a broken one fails only itself, the batch's
``max_parallel``, canary and ``stop_after_failures`` apply unchanged, and the single copy's
tested path (temporary name, rename, SHA-256 checked on arrival) is the only one. The cost
is the source read N times (over N SFTP channels of its one SSH session), which matters
little next to N writes.

Integrity: each copy hashes the bytes read from the source and the bytes that arrived (and
in distributed mode refuses, before the rename, bytes whose SHA-256 differs from the
sender's). Across destinations every copy must come to the same SHA-256: one that differs
means the source changed during the batch, and the result says so (``source_changed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.models import AuditEvent
from audit.writer import Completion
from hosts.access import Permission
from sshcontrol.fleet import HostResult
from sshcontrol.fleet_files import TransferResult
from sshcontrol.hostcall import AuditFields, HostCall
from sshcontrol.taskspec import CopySpec

Status = AuditEvent.Status


@dataclass(frozen=True)
class CopyEach:
    """``ssh_copy_many``'s operation: the source session's file copied to each destination host."""

    source_session_id: str
    source_host: str
    source_audit_id: int  # the source's read row: each destination's row names it
    spec: CopySpec
    reason: str = ""
    tool: str = "ssh_copy_many"
    permission: Permission = Permission.WRITE
    sudo: bool = False

    def audit(self, batch_id: str) -> AuditFields:
        return AuditFields(remote_path=self.spec.dest_path, batch_id=batch_id)

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "copy_end": "destination",
            "copy_from_host": self.source_host,
            "copy_from_path": self.spec.source_path,
            "copy_audit_id": self.source_audit_id,
        }
        if self.reason:
            details["reason"] = self.reason[:2000]
        return details

    def run(self, call: HostCall, call_id: str) -> tuple[HostResult, Completion]:
        done = call.copy_here(self.source_session_id, self.spec)
        result = TransferResult(
            call.host.name,
            "ok",
            call.event_id,
            session_id=call.open_session_id,
            remote_path=done.dest_path,
            size=done.size,
            sha256=done.sha256,
        )
        outcome = Completion(
            Status.OK,
            call.open_session_id,
            reconnected=bool(call.details.get("reconnected")),
            details=call.details,
            file_size=done.size,
            file_sha256=done.sha256,
        )
        return result, outcome
