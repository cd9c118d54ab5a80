"""Nothing on the MCP surface approves a request, and an approved request runs once, however called.

Every tool the client is offered is called with arguments that name a decision (``approve``,
``state``, ``decided_by``...) beside a pending request: whether a tool refuses them or ignores
them, the request stays pending. A scan of the product's source finds every write to an
approval request's ``state`` outside ``hosts/approvals.py`` (the admin's code included); the
admin's own machinery, which writes without naming a field in our code (a form, an inline, a
list edit, an action), is driven as a superuser would. Several ``ssh_approval_status`` calls
racing on one approved request run its command once, as the host shows.
"""

from __future__ import annotations

import ast
import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.urls import reverse
from mcp.types import CallToolResult

from audit.models import AuditEvent
from hosts import approvals
from hosts.clients import create_client
from hosts.models import ApprovalRequest, Host
from tests.approval_requests import pending_request
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]
GUARDED = r"^echo guarded"
REPO = Path(__file__).resolve().parents[2]
# The Django apps: sshlib sits below them (an import-linter contract in pyproject.toml keeps it
# from importing any of them), holds no model, and its own connection states are not rows.
PRODUCT = ("sshcontrol", "hosts", "audit")
THE_WRITER = "hosts/approvals.py"


@pytest.fixture
def agent(as_client: AsClient, make_host: Any, settings: Any) -> McpHarness:
    """A client offered every file and command tool on web1, whose ``echo guarded`` needs approval."""
    settings.APPROVAL_WAIT_SECONDS = 0.3
    web = make_host("web1")
    return as_client("agent", owner="alice", hosts=[web], rules=[("approve", GUARDED)], can_write_files=True)


@pytest.fixture
def scratch(sshd: SshServer) -> Iterator[str]:
    """A path prefix for files the calls write on the host (/tmp is the host's too: loopback)."""
    prefix = f"/tmp/sshc-approval-{secrets.token_hex(4)}"
    yield prefix
    for path in Path("/tmp").glob(f"{Path(prefix).name}*"):
        path.unlink()


def held(agent: McpHarness, command: str) -> int:
    result = agent.ok("ssh_execute", host="web1", command=command)
    assert result["state"] == "pending", result
    request_id: int = result["pending_approval"]["request_id"]
    return request_id


def decision_arguments(request_id: int) -> dict[str, Any]:
    """What a client might send hoping some tool reads it as a decision."""
    return {
        "approve": True,
        "approved": True,
        "approval": "approved",
        "state": "approved",
        "decision": "approve",
        "decided_by": "bob",
        "approved_by": "bob",
        "admin": "bob",
        "comment": "approved over MCP",
        "request_id": request_id,
        "approval_request": request_id,
        "approval_request_id": request_id,
    }


def valid_arguments(tool: str, request_id: int, session_id: str, scratch: str) -> dict[str, Any]:
    """Arguments that make a real call of ``tool`` (a tool missing here fails the test: add it)."""
    command = "echo guarded again"
    table: dict[str, dict[str, Any]] = {
        "ssh_list_hosts": {},
        "ssh_connect": {"host": "web1"},
        "ssh_status": {},
        "ssh_execute": {"host": "web1", "command": command},
        "ssh_approval_status": {"request_id": request_id},
        "ssh_upload_file": {"host": "web1", "remote_path": f"{scratch}-up", "content": "x"},
        "ssh_download_file": {"host": "web1", "remote_path": "/etc/hostname"},
        "ssh_list_files": {"host": "web1", "remote_path": "/tmp"},
        "ssh_disconnect": {"session_id": session_id},
        "ssh_start_job": {"host": "web1", "command": command},
        "ssh_job_status": {"job_id": "0" * 32},
        "ssh_cancel_job": {"job_id": "0" * 32},
        "ssh_list_jobs": {},
        "ssh_read_output": {"output_id": "0" * 32},
        "ssh_execute_many": {"hosts": ["web1"], "command": command},
        "ssh_upload_many": {"hosts": ["web1"], "remote_path": f"{scratch}-many", "content": "x"},
        "ssh_download_many": {"hosts": ["web1"], "remote_path": "/etc/hostname", "local_dir": "sec2"},
        "ssh_copy": {
            "from_host": "web1",
            "from_path": "/etc/hostname",
            "to_host": "web1",
            "to_path": f"{scratch}-cp",
        },
        "ssh_copy_many": {
            "from_host": "web1",
            "from_path": "/etc/hostname",
            "to_hosts": ["web1"],
            "to_path": f"{scratch}-cpm",
        },
    }
    assert tool in table, f"a new tool {tool!r}: give it valid arguments in this test"
    return table[tool]


def assert_undecided(request_id: int, tool: str) -> None:
    request = ApprovalRequest.objects.get(pk=request_id)
    assert (request.state, request.decided_by, request.decided_at, request.comment) == (
        ApprovalRequest.State.PENDING,
        "",
        None,
        "",
    ), f"{tool} changed the request: {request.state} by {request.decided_by!r}"
    others = ApprovalRequest.objects.exclude(state=ApprovalRequest.State.PENDING)
    assert not others.exists(), (
        f"{tool} decided a request: {list(others.values('pk', 'state', 'decided_by'))}"
    )


def test_no_tool_decides_a_pending_request_whatever_arguments_it_is_given(
    agent: McpHarness, scratch: str
) -> None:
    request_id = held(agent, "echo guarded 1")
    session_id = agent.ok("ssh_connect", host="web1")["session_id"]
    tools = sorted(tool.name for tool in agent.run(agent.client.list_tools()).tools)
    assert {"ssh_approval_status", "ssh_execute", "ssh_copy", "ssh_upload_file"} <= set(tools), tools
    refused = []
    for tool in tools:
        if tool == "ssh_disconnect":
            continue  # last: it closes the session the others may use
        for arguments in (
            {**valid_arguments(tool, request_id, session_id, scratch), **decision_arguments(request_id)},
            decision_arguments(request_id),
        ):
            result = agent.call(tool, **arguments)
            refused.append(result.is_error)
            assert_undecided(request_id, tool)
    for arguments in (
        decision_arguments(request_id),
        {"session_id": session_id, **decision_arguments(request_id)},
    ):
        agent.call("ssh_disconnect", **arguments)
        assert_undecided(request_id, "ssh_disconnect")
    assert any(refused) and not all(refused), "every call failed (or none did): the calls proved little"
    # The command was never run: its only row is the request's own, pending.
    assert list(AuditEvent.objects.filter(command="echo guarded 1").values_list("status", flat=True)) == [
        AuditEvent.Status.PENDING
    ]
    status = agent.ok("ssh_approval_status", request_id=request_id)
    assert (status["state"], status["execution"]) == ("pending", None)


# -- the source: one writer of an approval request's state ----------------------------------------


_OTHER_MODEL = re.compile(r"\b(SshSession|Job|HostKey)\.(State|objects)\b|\b_State\.")
_APPROVAL = re.compile(r"approval", re.IGNORECASE)
# Raw SQL writing the table (``hosts_approvalrequest``), however quoted.
_SQL_WRITE = re.compile(
    r"\b(update|insert\s+(or\s+\w+\s+)?into|replace\s+into)\s+[\"'`\[]?\w*approvalrequest", re.IGNORECASE
)
_WRITING_CALLS = {"update", "create", "get_or_create", "update_or_create", "bulk_create", "bulk_update"}


def _names_state(call: ast.Call) -> bool:
    """A ``state=`` keyword, ``**{"state": ...}``, or ``"state"`` among its positional arguments."""
    for keyword in call.keywords:
        if keyword.arg == "state":
            return True
        if keyword.arg is None and any(
            isinstance(node, ast.Constant) and node.value == "state" for node in ast.walk(keyword.value)
        ):
            return True
    return any(
        isinstance(node, ast.Constant) and node.value == "state"
        for arg in call.args
        for node in ast.walk(arg)
    )


def _state_writes(tree: ast.AST) -> Iterator[ast.stmt | ast.expr]:
    """Statements and calls that can write a ``state`` field (any model's: sorted out by the caller)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(
                isinstance(sub, ast.Attribute) and sub.attr == "state" for t in targets for sub in ast.walk(t)
            ):
                yield node
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            # A queryset write, setattr(row, "state", ...), or a row built with its state.
            writing = (
                name in _WRITING_CALLS
                or name == "ApprovalRequest"
                or (name == "setattr" and len(node.args) >= 2)
            )
            if writing and _names_state(node):
                yield node
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL_WRITE.search(node.value):
            yield node


def product_sources() -> list[Path]:
    """The product's Python files, migrations aside (they run once, before any request exists)."""
    return [
        path
        for package in PRODUCT
        for path in sorted((REPO / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def approval_state_writes() -> list[str]:
    """Every place in the product that may write an approval request's state: ``path:line: code``.

    A write counts unless the statement names another model with a ``state`` (sessions, jobs,
    host keys, the orphan tracker) and nothing about approvals.
    """
    found = []
    for path in product_sources():
        source = path.read_text()
        for node in _state_writes(ast.parse(source)):
            code = ast.get_source_segment(source, node) or ""
            if _OTHER_MODEL.search(code) and not _APPROVAL.search(code):
                continue
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {' '.join(code.split())[:120]}")
    return found


def test_only_hosts_approvals_writes_an_approval_requests_state() -> None:
    scanned = {str(path.relative_to(REPO)) for path in product_sources()}
    # The admin's code is read like the rest: its views and actions write through the ORM too.
    admin_code = {"hosts/admin/approval.py", "hosts/admin/client.py", "sshcontrol/admin.py", "audit/admin.py"}
    assert admin_code <= scanned, admin_code - scanned
    writes = approval_state_writes()
    # The scan sees the writer's own writes (expire, decide, claim): it would see others.
    assert sum(line.startswith(f"{THE_WRITER}:") for line in writes) >= 3, writes
    outside = [line for line in writes if not line.startswith(f"{THE_WRITER}:")]
    assert outside == [], "approval state written outside hosts/approvals.py:\n" + "\n".join(outside)


# -- the admin: its forms, inlines, list edits and actions ----------------------------------------

# What records a decision: no admin form may hold one of these for an admin to type into.
DECISION_FIELDS = frozenset({"state", "decided_by", "decided_at", "comment", "executed_event_id"})


def pending_in_the_admin() -> ApprovalRequest:
    """A pending request of client 'agent' (owned by alice, so the admin 'admin' may decide it)."""
    client = create_client("agent", owner="alice").client
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    return pending_request(client, host, "echo guarded 1", rule=GUARDED)


def request_forms(request: HttpRequest, pending: ApprovalRequest) -> dict[str, set[str]]:
    """Each admin form that holds approval requests (the model's admin, any inline of them on
    another model's page, the list's edits): the fields it would save."""
    forms: dict[str, set[str]] = {}
    for model, model_admin in admin.site._registry.items():
        if model is ApprovalRequest:
            name = type(model_admin).__name__
            forms[f"{name} change"] = set(model_admin.get_form(request, pending, change=True).base_fields)
            forms[f"{name} add"] = set(model_admin.get_form(request, None, change=False).base_fields)
            forms[f"{name} list"] = set(model_admin.list_editable)
        for inline_class in model_admin.inlines:
            if inline_class.model is ApprovalRequest:
                inline = inline_class(model, admin.site)
                parent = model._default_manager.first()
                formset = inline.get_formset(request, parent)
                forms[f"{type(model_admin).__name__} inline {inline_class.__name__}"] = set(
                    formset.form.base_fields
                )
    return forms


def test_no_admin_form_inline_or_list_edit_holds_a_decision(admin_user: Any, rf: RequestFactory) -> None:
    pending = pending_in_the_admin()
    request = rf.get("/admin/")
    request.user = admin_user
    forms = request_forms(request, pending)
    assert any(name.endswith(" change") for name in forms), "the approvals admin is registered"
    holding = {name: fields & DECISION_FIELDS for name, fields in forms.items() if fields & DECISION_FIELDS}
    assert holding == {}, f"admin forms an admin could decide a request through: {holding}"


def test_a_superuser_moves_a_request_only_through_the_decision(
    admin_client: Client, admin_user: Any, rf: RequestFactory
) -> None:
    pending = pending_in_the_admin()
    forged = {"state": "approved", "decided_by": "mallory", "comment": "approved by hand"}
    # The request's own form, and the add form, posted as a browser would with the decision typed in.
    admin_client.post(
        reverse("admin:hosts_approvalrequest_change", args=[pending.pk]), {**forged, "_save": "Save"}
    )
    admin_client.post(
        reverse("admin:hosts_approvalrequest_add"),
        {**forged, "client": pending.client_id, "host": pending.host_id, "command": "id", "_save": "Save"},
    )
    changelist = reverse("admin:hosts_approvalrequest_changelist")
    # A list edit of the state, as the changelist's form would post one.
    admin_client.post(
        changelist,
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(pending.pk),
            "form-0-state": "approved",
            "_save": "Save",
        },
    )
    # Every action the list offers a superuser, run on the request (and confirmed where it asks).
    request = rf.get(changelist)
    request.user = admin_user
    offered = admin.site._registry[ApprovalRequest].get_actions(request)
    for action in offered:
        selected = {"action": action, "_selected_action": [str(pending.pk)], "index": "0"}
        admin_client.post(changelist, selected)
        admin_client.post(changelist, {**selected, "post": "yes"})
    assert ApprovalRequest.objects.filter(pk=pending.pk).exists()
    assert_undecided(pending.pk, f"the admin's forms, list edit or actions ({sorted(offered)})")
    assert not ApprovalRequest.objects.exclude(pk=pending.pk).exists(), "the add form made a request"
    # What does move it: the decision, through hosts.approvals.decide, recorded with its author.
    admin_client.post(
        reverse("admin:hosts_approvalrequest_decide", args=[pending.pk]), {"_approve": "1", "comment": "ok"}
    )
    decided = ApprovalRequest.objects.get(pk=pending.pk)
    assert (decided.state, decided.decided_by) == (ApprovalRequest.State.APPROVED, admin_user.username)
    assert decided.decided_at is not None
    assert LogEntry.objects.filter(object_id=str(pending.pk), change_message="Approved.").exists()


# -- an approved request, picked up by racing calls -----------------------------------------------


RACERS = 6


def test_racing_status_calls_run_an_approved_request_once(agent: McpHarness, scratch: str) -> None:
    command = f"echo guarded race >> {scratch}-race"
    request_id = held(agent, command)
    approvals.decide(request_id, "bob", approve=True)
    pending: list[Future[CallToolResult]] = [
        agent.submit("ssh_approval_status", request_id=request_id) for _ in range(RACERS)
    ]
    results = [future.result(120) for future in pending]
    executions = [
        r.structured_content["execution"]
        for r in results
        if not r.is_error and r.structured_content and r.structured_content["execution"]
    ]
    assert len(executions) == 1, f"{len(executions)} of {RACERS} calls ran the command"
    ran = executions[0]["audit_id"]
    for result in results:  # a loser finds it executed, or lost the claim: never runs it again
        if result.is_error:
            assert "is no longer approved" in result.content[0].text, result.content  # type: ignore[union-attr]
        else:
            assert result.structured_content is not None
            assert result.structured_content["state"] == "executed", result.structured_content
            assert result.structured_content["executed_audit_id"] == ran
    # The host: the command's side effect happened once.
    assert Path(f"{scratch}-race").read_text() == "guarded race\n"
    # The audit log: one run (the request's own row stays pending; a lost claim ran nothing).
    rows = AuditEvent.objects.filter(command=command).exclude(status=AuditEvent.Status.PENDING)
    assert [row.pk for row in rows if row.status == AuditEvent.Status.OK] == [ran]
    assert all(row.exit_status is None for row in rows if row.pk != ran), list(rows.values())
    assert ApprovalRequest.objects.get(pk=request_id).executed_event_id == ran
