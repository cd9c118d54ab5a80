"""stdin leaves a trace: every command's audit row records the caller's stdin (size, SHA-256,
redacted and capped text), through the real MCP tool against the real sshd and real sudo.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Callable

from django.core.management import call_command
from django.urls import reverse

from audit import chain
from audit.models import AuditEvent
from hosts import approvals
from hosts.models import ApprovalRequest, Host
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]

SCRIPT = "echo from-the-script\nid -un > /dev/null\necho second line\n"


def _row(audit_id: int) -> AuditEvent:
    return AuditEvent.objects.get(pk=audit_id)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_it_records_a_script_fed_to_sh_on_stdin(as_client: AsClient, make_host) -> None:
    agent = as_client("agent", hosts=[make_host("web1")])
    result = agent.ok("ssh_execute", host="web1", command="sh -s", stdin=SCRIPT)
    assert result["stdout"] == "from-the-script\nsecond line\n"
    event = _row(result["audit_id"])
    assert event.command == "sh -s"
    assert (event.stdin, event.stdin_bytes, event.stdin_sha256) == (
        SCRIPT,
        len(SCRIPT.encode()),
        _sha(SCRIPT),
    )
    assert event.stdin_truncated is False
    # A command without stdin says so: no size, no digest.
    plain = _row(agent.ok("ssh_execute", host="web1", command="true")["audit_id"])
    assert (plain.stdin, plain.stdin_bytes, plain.stdin_sha256) == ("", None, "")
    assert chain.verify().ok


def test_it_hashes_the_stdin_into_the_chain(as_client: AsClient, make_host) -> None:
    agent = as_client("agent", hosts=[make_host("web1")])
    audit_id = agent.ok("ssh_execute", host="web1", command="sh -s", stdin=SCRIPT)["audit_id"]
    assert chain.verify().ok
    for forged in ({"stdin": "echo harmless\n"}, {"stdin_sha256": _sha("x")}, {"stdin_bytes": 3}):
        original = AuditEvent.objects.filter(pk=audit_id).values(*forged).get()
        AuditEvent.objects.filter(pk=audit_id).update(**forged)
        broken = chain.verify().broken
        assert broken is not None and broken.event_id == audit_id and broken.check == "hash", forged
        AuditEvent.objects.filter(pk=audit_id).update(**original)
    assert chain.verify().ok


def test_it_redacts_secrets_in_stdin_and_keeps_no_digest_of_them(as_client: AsClient, make_host) -> None:
    agent = as_client("agent", hosts=[make_host("web1")])
    secret_stdin = "export DB_PASSWORD=Tr0ub4dor-stdin\nmysql -u app\nsshc_" + "A" * 43 + "\n"
    result = agent.ok("ssh_execute", host="web1", command="wc -c", stdin=secret_stdin)
    assert result["stdout"].strip() == str(len(secret_stdin.encode()))  # the host got it all
    event = _row(result["audit_id"])
    assert "Tr0ub4dor-stdin" not in event.stdin and "A" * 43 not in event.stdin
    assert "DB_PASSWORD=[REDACTED]" in event.stdin and "mysql -u app" in event.stdin
    assert event.stdin_bytes == len(secret_stdin.encode())
    # The digest of a text whose only unknown is the hidden password would let a reader test guesses.
    assert event.stdin_sha256 == ""


def test_it_caps_a_long_stdin_head_and_tail(as_client: AsClient, make_host, settings) -> None:
    settings.AUDIT_OUTPUT_BYTES = 1000
    agent = as_client("agent", hosts=[make_host("web1")])
    long_stdin = "HEAD\n" + "x" * 50_000 + "\nTAIL\n"
    result = agent.ok("ssh_execute", host="web1", command="wc -c", stdin=long_stdin)
    event = _row(result["audit_id"])
    assert event.stdin_truncated and event.stdin.startswith("HEAD") and event.stdin.endswith("TAIL\n")
    assert len(event.stdin) < 1100
    assert (event.stdin_bytes, event.stdin_sha256) == (len(long_stdin), _sha(long_stdin))


def test_it_records_only_the_caller_s_stdin_never_the_sudo_password(
    as_client: AsClient, make_host, sshd: SshServer, sudoers: None
) -> None:
    web = make_host("web1")
    credential = web.credential
    assert credential is not None
    credential.set_sudo_password(sshd.password)
    credential.save()
    agent = as_client("agent", hosts=[web], can_sudo=True)
    # The runtime sends the password as stdin's first line; sudo reads it, cat echoes the rest.
    result = agent.ok("ssh_execute", host="web1", command="id -u; cat", stdin="after\n", sudo=True)
    assert result["stdout"] == "0\nafter\n"
    event = _row(result["audit_id"])
    assert (event.stdin, event.stdin_bytes, event.stdin_sha256) == ("after\n", 6, _sha("after\n"))
    password = sshd.password
    encodings = {
        password,
        base64.b64encode(password.encode()).decode(),
        password.encode().hex(),
        password[::-1],
        _sha(password + "\n"),
        _sha(password + "\nafter\n"),
    }
    recorded = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert not [form for form in encodings if form in recorded]


def test_it_records_the_stdin_of_a_request_held_for_approval_and_of_its_run(
    as_client: AsClient, make_host, settings
) -> None:
    settings.APPROVAL_WAIT_SECONDS = 0.2
    agent = as_client("agent", owner="alice", hosts=[make_host("web1")], rules=[("approve", r"^sh -s")])
    held = agent.ok("ssh_execute", host="web1", command="sh -s", stdin=SCRIPT)
    assert held["state"] == "pending"
    request = ApprovalRequest.objects.get(pk=held["pending_approval"]["request_id"])
    pending = AuditEvent.objects.get(status="pending")
    assert (pending.stdin, pending.stdin_sha256) == (SCRIPT, _sha(SCRIPT))
    approvals.decide(request.pk, "bob", approve=True)
    ran = agent.ok("ssh_approval_status", request_id=request.pk)["execution"]
    assert ran["stdout"] == "from-the-script\nsecond line\n"
    event = _row(ran["audit_id"])
    assert (event.command, event.stdin, event.stdin_bytes) == ("sh -s", SCRIPT, len(SCRIPT))
    assert event.details["approval_request"] == request.pk
    assert chain.verify().ok


def test_it_records_the_stdin_of_a_denied_command(as_client: AsClient, make_host) -> None:
    agent = as_client("agent", hosts=[make_host("web1")], rules=[("deny", r"^sh\b")])
    agent.error("ssh_execute", host="web1", command="sh -s", stdin=SCRIPT)
    event = AuditEvent.objects.get(status="denied")
    assert (event.stdin, event.stdin_sha256) == (SCRIPT, _sha(SCRIPT))


def test_it_exports_and_shows_the_stdin(as_client: AsClient, make_host, admin_client) -> None:
    agent = as_client("agent", hosts=[make_host("web1")])
    audit_id = agent.ok("ssh_execute", host="web1", command="sh -s", stdin=SCRIPT)["audit_id"]

    out = io.StringIO()
    call_command("audit_export", "--format", "jsonl", stdout=out)
    [exported] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (exported["stdin"], exported["stdin_bytes"], exported["stdin_sha256"]) == (
        SCRIPT,
        len(SCRIPT),
        _sha(SCRIPT),
    )
    out = io.StringIO()
    call_command("audit_export", "--format", "csv", stdout=out)
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["stdin"], row["stdin_bytes"], row["stdin_sha256"], row["stdin_truncated"]) == (
        SCRIPT,
        str(len(SCRIPT)),
        _sha(SCRIPT),
        "false",
    )

    body = admin_client.get(reverse("admin:audit_auditevent_change", args=[audit_id])).content.decode()
    assert "Stdin" in body and "echo from-the-script" in body and _sha(SCRIPT) in body
    assert f"({len(SCRIPT)} bytes)" in body
    assert Host.objects.filter(name="web1").exists()
