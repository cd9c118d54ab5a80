"""A read-only grant cannot change the host's files, whatever its allow-list says (issue 9, item 2).

Each write attempt goes through the real MCP tool to the suite's real sshd as a client whose
read-only grant allows *every* command line (``.*``), so only the read-only classification
stands between it and the host. Each must be refused and audited ``denied``, and afterwards a
look at the remote host (as the unrestricted local client) must find nothing written.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit.models import AuditEvent
from hosts.models import Host
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]

# Each is run in the scratch directory with "x" on stdin; most would create or change a file there.
WRITE_ATTEMPTS = [
    "echo x > f",
    "echo x >f",
    "echo x>f",
    "echo x 1>f",
    "echo x 2>f",
    "echo x>>f",
    "echo x 1>>f",
    "echo x >|f",
    "echo x &>f",
    "echo x &>>f",
    "echo x <>f",
    "echo x 3<>f",
    "echo x >& f",
    "cat > f",
    "cat >> f",
    "> f",
    "echo x > /dev/null; echo y > f",
    "echo x >/dev/null\necho y >f",
    "echo x >/dev/null2",
    "echo x >/dev/..ESCAPE",
    'echo x > "f"',
    "echo x > 'f'",
    "echo x > ${HOME}/sshc-ro-probe",
    "echo x > $HOME/sshc-ro-probe",
    "echo x > ~/sshc-ro-probe",
    "echo x > $(echo f)",
    "echo x > `echo f`",
    "echo x > f*",
    "echo x \\\n> f",
    "echo x >\\\nf",
    "ec\\\nho x > f",
    "tee f",
    "cat | tee f",
    "tee -a f < /dev/null",
    "cat <<EOF > f\nhello\nEOF",
    "cat <<<hello > f",
    "cat <<'EOF' | tee f\nhello\nEOF",
    "dd of=f",
    "cp /etc/hostname f",
    "mv f g",
    "touch f",
    "sed -i s/a/b/ f",
    "find . -fprint f",
    "find . -maxdepth 0 -exec touch f \\;",
    "find . -name f -delete",
    'awk \'BEGIN { print "x" > "f" }\'',
    "sort -o f /etc/hostname",
    "sort -of /etc/hostname",
    "sort --output=f /etc/hostname",
    "uniq /etc/hostname f",
    "xargs touch",
    "env touch f",
    "command touch f",
    "nice touch f",
    "timeout 5 touch f",
    "bash -c 'echo x > f'",
    "sh -c 'echo x > f'",
    'python3 -c \'open("f", "w")\'',
    "eval 'echo x > f'",
    "exec 3>f",
    "cat >(tee f)",
    "f() { touch f; }; f",
    "{ echo x; } > f",
    "(echo x) > f",
    "X=touch; $X f",
    "echo 'x > f",
    "cat <<EOF\n$(touch f)\nEOF",
    "echo ${X:=$(touch f)}",
    "ls {,>f}",
    "if true; then touch f; fi",
    "echo x | less -o f",
    # "--" as the argument of an option, not the end of them; uniq's output after "--".
    "sort -T -- -o f /etc/hostname",
    "file -F -- -C -m /dev/stdin <<<'0 string x X'",
    "uniq -- /etc/hostname -f",
    # A lesskey source on stdin sets LESSOPEN: less runs it for the file, even off a tty.
    "less --lesskey-src=/dev/stdin f0 <<<'#env\nLESSOPEN=|touch f %s'",
]

# Commands that only read and must keep working on a read-only grant.
HARMLESS = [
    ("echo hello", "hello\n"),
    ("cat", "x\n"),
    ("cat < f0", "zero\n"),
    ("cat f0 > /dev/null", ""),
    ('cat f0 > "/dev/null"', ""),
    ("cat f0 missing 2>/dev/null", "zero\n"),
    ("cat missing 2>&1 >/dev/null | wc -l", "1\n"),
    ("ls", "f0\n"),
    ("ls -la | grep -c ' f0$'", "1\n"),  # the owner column may contain f0 (random user)
    ('echo "it\'s $HOME" | wc -l', "1\n"),
    ("echo 'a > b'", "a > b\n"),
    ("echo a # > f", "a\n"),
    ("cat <<'EOF'\n$HOME > f\nEOF", "$HOME > f\n"),
    ("cat <<<here", "here\n"),
    ("find . -name 'f*'", "./f0\n"),
    ("sort -r f0", "zero\n"),
    ("uniq f0", "zero\n"),
    ("head -1 f0 && tail -1 f0", "zero\nzero\n"),
    ("/usr/bin/printf '%s\\n' one", "one\n"),
    ("echo x\\\ny", "xy\n"),
]


@dataclass
class Scene:
    """A scratch directory on the host, a reader with a read-only grant, and the unrestricted local client."""

    admin: McpHarness
    reader: McpHarness
    directory: str
    home: str
    escape: str  # a path outside the scratch directory (under /tmp, unique to this run's user)

    def listing(self) -> str:
        """What the scratch directory, its parent's escape target and the home probes hold now."""
        probe = (
            f"ls -A {self.directory}; ls -d {self.escape} {self.home}/sshc-ro-probe 2>/dev/null; "
            f"cat {self.directory}/f0"
        )
        result = self.admin.ok("ssh_execute", host="web1", command=probe)
        assert result["exit_status"] in (0, 1, 2), result
        return str(result["stdout"])


@pytest.fixture
def scene(
    mcp: McpHarness, as_client: AsClient, make_host: Callable[..., Host], sshd: SshServer
) -> Iterator[Scene]:
    web = make_host("web1")
    directory, escape = f"/tmp/sshc-ro-{sshd.user}", f"/tmp/sshc-ro-escape-{sshd.user}"
    home = mcp.ok("ssh_execute", host="web1", command='printf %s "$HOME"')["stdout"]
    made = mcp.ok(
        "ssh_execute",
        host="web1",
        command=f"rm -rf {directory} {escape} {home}/sshc-ro-probe && mkdir {directory}"
        f" && echo zero > {directory}/f0",
    )
    assert made["exit_status"] == 0, made
    reader = as_client("reader", hosts=[web], read_only=True, rules=[("allow", ".*")])
    yield Scene(mcp, reader, directory, home, escape)
    mcp.ok("ssh_execute", host="web1", command=f"rm -rf {directory} {escape} {home}/sshc-ro-probe")


def test_it_refuses_and_audits_every_write_attempt_on_a_read_only_grant(scene: Scene) -> None:
    assert len(WRITE_ATTEMPTS) >= 40
    before = scene.listing()
    assert before == "f0\nzero\n"
    allowed: list[str] = []
    for command in (attempt.replace("ESCAPE", scene.escape) for attempt in WRITE_ATTEMPTS):
        last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        result = scene.reader.call(
            "ssh_execute", host="web1", command=command, working_directory=scene.directory, stdin="x\n"
        )
        if not result.is_error:
            allowed.append(command)
            continue
        message = result.content[0].text  # type: ignore[union-attr]
        assert "a read-only grant refuses" in message, (command, message)
        event = AuditEvent.objects.get(id__gt=last)
        assert (event.status, event.client, event.command) == ("denied", "reader", command), command
        assert "a read-only grant refuses" in event.error
    assert allowed == []
    # Nothing reached the host: the directory, the escape target and the home probe are as before.
    assert scene.listing() == before


@pytest.mark.parametrize(("command", "stdout"), HARMLESS, ids=[c for c, _ in HARMLESS])
def test_it_still_runs_harmless_commands_on_a_read_only_grant(
    scene: Scene, command: str, stdout: str
) -> None:
    result = scene.reader.ok(
        "ssh_execute", host="web1", command=command, working_directory=scene.directory, stdin="x\n"
    )
    assert result["stdout"] == stdout, (command, result)
    assert AuditEvent.objects.filter(client="reader").order_by("-id").first().status == "ok"  # type: ignore[union-attr]
    assert scene.listing() == "f0\nzero\n"


def test_it_refuses_a_command_it_does_not_know_unless_the_grant_names_it(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    web = make_host("web1")
    broad = as_client("broad", hosts=[web], read_only=True, rules=[("allow", ".*")])
    named = as_client("named", hosts=[web], read_only=True, rules=[("allow", r"getconf [A-Z_]+")])
    message = broad.error("ssh_execute", host="web1", command="getconf PAGE_SIZE")
    assert "'getconf' is not known to only read" in message
    assert named.ok("ssh_execute", host="web1", command="getconf PAGE_SIZE")["exit_status"] == 0
    # Naming a command never lifts the refusal of a writer or of a redirection.
    writer = as_client(
        "writer", hosts=[web], read_only=True, rules=[("allow", "tee( .*)?"), ("allow", "getconf .*")]
    )
    assert "'tee'" in writer.error("ssh_execute", host="web1", command="tee /tmp/x")
    assert "output redirection" in writer.error(
        "ssh_execute", host="web1", command="getconf PAGE_SIZE > /tmp/x"
    )


def test_it_keeps_the_allow_list_of_a_read_only_grant(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    web = make_host("web1")
    reader = as_client("reader", hosts=[web], read_only=True, rules=[("allow", "(ls|cat|echo)( .*)?")])
    assert reader.ok("ssh_execute", host="web1", command="echo ok")["stdout"] == "ok\n"
    assert "not on the allow-list" in reader.error("ssh_execute", host="web1", command="uptime")
    assert "a read-only grant refuses" in reader.error(
        "ssh_execute", host="web1", command="echo x > ~/.bashrc"
    )
    # Uploads stay refused, and audited.
    message = reader.error("ssh_upload_file", host="web1", remote_path=".bashrc", content="sudo() { :; }")
    # No grant writes anywhere: ssh_upload_file is not even offered (mcp/visibility.py).
    assert "may not write files on any host" in message
    statuses = AuditEvent.objects.filter(client="reader").order_by("-id").values_list("status", flat=True)
    assert statuses[0] == "denied"


def test_it_refuses_writes_with_sudo_on_a_read_only_grant(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    web = make_host("web1")
    root_reader = as_client(
        "root-reader", hosts=[web], read_only=True, can_sudo=True, rules=[("allow", ".*")]
    )
    message = root_reader.error("ssh_execute", host="web1", command="echo x > /etc/sshc-ro", sudo=True)
    assert "a read-only grant refuses output redirection '>' to '/etc/sshc-ro'" in message
    assert AuditEvent.objects.filter(client="root-reader").get().status == "denied"


def test_it_refuses_a_line_dash_reads_differently_under_sudo(
    as_client: AsClient, make_host: Callable[..., Host], sshd: SshServer, sudoers: None, tmp_path: Path
) -> None:
    # sudo runs the command with sh -c (dash), which has no $'...': it reads "$" + '\' and then
    # a redirection that bash (and the classifier) saw inside the quotes.
    web = make_host("web1")
    credential = web.credential
    assert credential is not None
    credential.set_sudo_password(sshd.password)
    credential.save()
    root_reader = as_client(
        "root-reader", hosts=[web], read_only=True, can_sudo=True, rules=[("allow", ".*")]
    )
    target = tmp_path / "written-by-root"
    message = root_reader.error("ssh_execute", host="web1", command=f"echo $'\\' > {target} #'", sudo=True)
    assert "$'...' with a backslash" in message
    assert AuditEvent.objects.filter(client="root-reader").get().status == "denied"
    assert not target.exists()


def test_it_refuses_a_network_redirection_on_a_read_only_grant(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    # bash connects for /dev/tcp/HOST/PORT; ">&0" then sends the output to that service.
    web = make_host("web1")
    reader = as_client("reader", hosts=[web], read_only=True, rules=[("allow", ".*")])
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        message = reader.error(
            "ssh_execute", host="web1", command=f"echo SET x 1 </dev/tcp/127.0.0.1/{port} >&0"
        )
        assert "bash opens a network connection" in message
        assert AuditEvent.objects.filter(client="reader").get().status == "denied"
        # Had the command run, its connection would be waiting here by the time the call returned.
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
