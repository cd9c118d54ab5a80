"""One approval for a batch of ``ssh_execute_many``: ask, wait like ``ssh_execute``, run it once.

``fleet.run_batch`` calls ``Asker`` when command rules hold back some of the batch's hosts:
one ``ApprovalRequest`` lists them all (who may decide is fixed when it is made, as for one
host: ``hosts.approvals``), and the call waits for the decision with progress notifications
(``approval_flow.wait``). Approved in time, the request is claimed (approved -> executed, one
conditional UPDATE) and the batch runs; past the wait, the request keeps every host of the
batch and its plan, and ``ssh_approval_status`` claims and runs it once (``run_approved_batch``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mcp.server.mcpserver.exceptions import ToolError

from hosts import approvals
from hosts.access_models import ApprovalRequest
from hosts.models import Host
from sshcontrol import fleet
from sshcontrol.caller import Caller
from sshcontrol.dbretry import retrying
from sshcontrol.fleet import ApprovalAsk, BatchOutcome, BatchRefused, Plan, RunCommand
from sshcontrol.mcp.approval_flow import wait
from sshcontrol.mcp.approved_runs import checked_timeout
from sshcontrol.mcp.identity import own_client
from sshcontrol.taskspec import CommandSpec

State = ApprovalRequest.State


@dataclass
class Asker:
    """The ``fleet.Approver`` of one ``ssh_execute_many`` call."""

    caller: Caller
    spec: CommandSpec
    reason: str
    plan: Plan
    notify: Callable[[str], None]
    cancelled: threading.Event

    def __call__(self, ask: ApprovalAsk) -> ApprovalRequest:
        client_id = own_client(self.caller)
        request = retrying(lambda: self._create(client_id, ask), "creating the approval request")
        self.notify(f"waiting for approval request {request.pk} covering {len(ask.hosts)} host(s)")
        if wait(request.pk, self.notify, self.cancelled) == State.APPROVED:
            claimed = retrying(
                lambda: approvals.claim(request.pk, client_id), "claiming the approved request"
            )
            if claimed is not None:
                return claimed
        retrying(request.refresh_from_db, "reading the approval request")
        return request

    def _create(self, client_id: int, ask: ApprovalAsk) -> ApprovalRequest:
        # A retry after a lost reply finds the request already made for this batch: never two.
        existing = ApprovalRequest.objects.filter(batch_id=ask.batch_id, client_id=client_id).first()
        if existing is not None:
            return existing
        return approvals.create(
            client_id=client_id,
            host=Host.objects.get(name=ask.hosts[0]),
            command=self.spec.command,
            working_directory=self.spec.working_directory or "",
            timeout=self.spec.timeout,
            sudo=self.spec.sudo,
            stdin="",
            reason=self.reason,
            rule=ask.rule,
            session_id="",
            audit_event_id=None,
            batch_id=ask.batch_id,
            batch_hosts=ask.hosts,
            batch_plan={"hosts": ask.all_hosts, **asdict(self.plan)},
        )


def run_approved_batch(
    caller: Caller,
    request: ApprovalRequest,
    progress: Callable[[int, int], None] | None,
    cancelled: threading.Event,
) -> BatchOutcome:
    """Claim an approved batch request and run its batch, once, under the batch id that asked.

    Every host is authorized again (grants may have changed since); the hosts the request
    lists run under it, a host that needs an approval it does not list is refused.
    """
    client_id = own_client(caller)
    claimed = retrying(lambda: approvals.claim(request.pk, client_id), "claiming the approved request")
    if claimed is None:
        raise ToolError(f"approval request {request.pk} is no longer approved (it ran or expired)")
    saved = claimed.batch_plan if isinstance(claimed.batch_plan, dict) else {}
    hosts = [str(h) for h in saved.get("hosts", claimed.batch_hosts)]
    plan = Plan(
        max_parallel=int(saved.get("max_parallel", Plan.max_parallel)),
        batch_size=saved.get("batch_size"),
        stop_after_failures=saved.get("stop_after_failures"),
    )
    spec = CommandSpec(
        claimed.command,
        claimed.working_directory or None,
        checked_timeout(claimed.timeout),
        None,
        claimed.sudo,
    )
    try:
        return fleet.run_batch(
            caller,
            RunCommand(spec, reason=claimed.reason),
            hosts=hosts,
            plan=plan,
            progress=progress,
            cancelled=cancelled,
            approved=claimed,
            batch_id=claimed.batch_id,
        )
    except BatchRefused as exc:
        raise ToolError(
            f"approval request {request.pk} was claimed but its batch cannot start: {exc}"
        ) from None
