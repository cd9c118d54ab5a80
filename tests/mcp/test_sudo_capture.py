"""A client without sudo must not capture the sudo password of a client with it (issue 9, item 1).

Against the suite's real sshd and real sudo: an attacker client that may run commands or
write files as the remote account (but not use sudo) plants shell start-up code that steals
the password from the next ``ssh_execute(sudo=true)``; a victim client with sudo then calls.
The sudo password rule must refuse the victim's call, and the password must not be
recoverable from any file in the remote home, any tool output or any audit row, in plain,
base64, hex or reversed form. Where the configuration is legal (the attacker lost its grant
after planting), the hardened sudo invocation must still walk past the naive plants.
"""

from __future__ import annotations

import base64
import binascii
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from hosts import approvals
from hosts.models import ApprovalRequest, Grant, Host, McpClient
from tests.leaks import recoverable
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]
SUDO_PASSWORD = "s3cret-sudo-Pw-for-the-capture-tests"  # set as the test user's own password below


# -- the remote account ----------------------------------------------------------------------


@pytest.fixture
def remote_home(sshd: SshServer, sudoers: None) -> Iterator[Path]:
    """The test user's home, restored afterwards (plants must not leak into other tests).

    The user's login password is changed to ``SUDO_PASSWORD`` for the test: sudo asks for it,
    and a distinct value makes any trace of it unambiguous.
    """
    entry = pwd.getpwnam(sshd.user)
    home = Path(entry.pw_dir)
    saved = Path(tempfile.mkdtemp(prefix="sshcontrol-home-"))
    shutil.copytree(home, saved / "home", symlinks=True)
    subprocess.run(["chpasswd"], input=f"{sshd.user}:{SUDO_PASSWORD}\n", text=True, check=True)
    try:
        yield home
    finally:
        subprocess.run(["chpasswd"], input=f"{sshd.user}:{sshd.password}\n", text=True, check=True)
        subprocess.run(["pkill", "-KILL", "-u", sshd.user], check=False)
        for child in home.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        shutil.copytree(saved / "home", home, symlinks=True, dirs_exist_ok=True)
        subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(home)], check=True)
        shutil.rmtree(saved)


def sudo_host(make_host: Callable[..., Host], name: str = "web1") -> Host:
    host = make_host(name, auth="ed25519")  # the login password changes for these tests
    credential = host.credential
    assert credential is not None
    credential.set_sudo_password(SUDO_PASSWORD)
    credential.save()
    return host


# -- the detector ------------------------------------------------------------------------


def test_it_finds_the_password_in_every_encoding_it_checks() -> None:
    """The detector itself: a test of absence is only as good as this."""
    pw = SUDO_PASSWORD.encode()
    for data in (
        b"x" + pw + b"\n",
        b"log: " + base64.b64encode(pw + b"\n") + b"\n",
        b"z" + base64.b64encode(b"ab" + pw),
        binascii.hexlify(pw) + b"\n",
        b" ".join(f"{c:02x}".encode() for c in pw),
        b"\n ".join(binascii.hexlify(pw[i : i + 16], b" ") for i in range(0, len(pw), 16)),  # od -An -tx1
        pw[::-1] + b"\n",
        base64.b64encode(pw[::-1]),
    ):
        assert recoverable(SUDO_PASSWORD, data), data
    assert not recoverable(SUDO_PASSWORD, b"nothing here " + base64.b64encode(b"other"))


def assert_not_recoverable(home: Path, outputs: list[Any]) -> None:
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert not recoverable(SUDO_PASSWORD, path.read_bytes()), f"the sudo password is in {path}"
    for output in outputs:
        assert not recoverable(SUDO_PASSWORD, repr(output).encode()), output
    for event in AuditEvent.objects.all():
        row = repr({f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields})
        assert not recoverable(SUDO_PASSWORD, row.encode()), f"the sudo password is in audit row {event.pk}"


def refused_victim(victim: McpHarness, outputs: list[Any]) -> str:
    message = victim.error("ssh_execute", host="web1", command="id -u", sudo=True)
    outputs.append(message)
    assert "sudo is refused on host 'web1'" in message, message
    assert "could capture it" in message and "sshcontrol check" in message
    event = AuditEvent.objects.filter(client="victim").order_by("-id").first()
    assert event is not None and event.status == "denied" and event.details["sudo_exposed_to"]
    return message


# -- the three plants ------------------------------------------------------------------------

BASHRC_SUDO_FUNCTION = """\
sudo() {
  IFS= read -r pw
  printf '%s\\n' "$pw" | base64 >> "$HOME/.cache-b64"
  printf '%s\\n' "$pw" | command sudo "$@"
}
"""

PATH_SHIM = """\
#!/bin/sh
IFS= read -r pw
printf '%s' "$pw" | od -An -tx1 >> "$HOME/.cache-hex"
printf '%s\\n' "$pw" | exec /usr/bin/sudo "$@"
"""

ABSOLUTE_PATH_FUNCTION = """\
function /usr/bin/sudo {
  IFS= read -r pw
  printf '%s\\n' "$pw" | rev >> "$HOME/.cache-rev"
  printf '%s\\n' "$pw" | command /usr/bin/sudo "$@"
}
sudo() { /usr/bin/sudo "$@"; }
"""


def test_it_refuses_sudo_where_a_client_without_it_planted_a_bashrc_function(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    web = sudo_host(make_host)
    attacker = as_client("attacker", hosts=[web])  # execute, read files; no sudo
    victim = as_client("victim", hosts=[web], can_sudo=True)
    outputs: list[Any] = []
    outputs.append(
        attacker.ok("ssh_execute", host="web1", command="cat > ~/.bashrc", stdin=BASHRC_SUDO_FUNCTION)
    )
    refused_victim(victim, outputs)
    outputs.append(attacker.call("ssh_execute", host="web1", command="cat ~/.cache-b64").model_dump())
    assert not (remote_home / ".cache-b64").exists()
    assert_not_recoverable(remote_home, outputs)


def test_it_refuses_sudo_where_a_writer_through_another_host_entry_planted_a_path_shim(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    """The attacker reaches the same account through another host entry and credential, uploads only."""
    web = sudo_host(make_host)
    alias = make_host("web1-alias", auth="rsa")  # same address, port and user; its own credential
    attacker = as_client(
        "attacker", hosts=[alias], can_execute=False, can_read_files=True, can_write_files=True
    )
    victim = as_client("victim", hosts=[web], can_sudo=True)
    outputs: list[Any] = []
    for path, content, mode in (
        ("sudo", PATH_SHIM, "0755"),
        (".profile", 'PATH="$HOME:$PATH"\n', "0644"),
        (".bashrc", '. "$HOME/.profile"\n', "0644"),
    ):
        outputs.append(
            attacker.ok(
                "ssh_upload_file",
                host="web1-alias",
                remote_path=path,
                content=content,
                file_mode=mode,
                overwrite=True,
            )
        )
    refused_victim(victim, outputs)
    outputs.append(
        attacker.call("ssh_download_file", host="web1-alias", remote_path=".cache-hex").model_dump()
    )
    assert not (remote_home / ".cache-hex").exists()
    assert_not_recoverable(remote_home, outputs)


def test_it_refuses_sudo_where_an_allow_listed_client_defined_a_function_for_sudos_path(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    """An execute grant limited to an allow-list still runs commands: `tee` writes the start-up file.

    (A read-only grant refuses `tee`; it still counts for the rule: tests/hosts/test_sudo_rule.py.)
    """
    web = sudo_host(make_host)
    attacker = as_client("attacker", hosts=[web], rules=[("allow", r"(cat|tee)( .*)?")])
    victim = as_client("victim", hosts=[web], can_sudo=True)
    outputs: list[Any] = []
    outputs.append(
        attacker.ok("ssh_execute", host="web1", command="tee .bashrc", stdin=ABSOLUTE_PATH_FUNCTION)
    )
    refused_victim(victim, outputs)
    outputs.append(attacker.call("ssh_execute", host="web1", command="cat .cache-rev").model_dump())
    assert not (remote_home / ".cache-rev").exists()
    assert_not_recoverable(remote_home, outputs)


def test_it_runs_sudo_past_naive_plants_once_the_planter_lost_its_grant(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    """Legal configuration, planted account: the hardened invocation skips functions and PATH.

    Start-up code that replaces ``exec`` or reads stdin itself would still win (docs/security.md):
    this shows the naive plants fail, not that a planted account is safe.
    """
    web = sudo_host(make_host)
    attacker = as_client("attacker", hosts=[web])
    victim = as_client("victim", hosts=[web], can_sudo=True)
    outputs: list[Any] = []
    env_function = """\
function /usr/bin/env {
  IFS= read -r pw
  printf '%s\\n' "$pw" >> "$HOME/.cache-env"
  printf '%s\\n' "$pw" | command /usr/bin/env "$@"
}
"""
    bashrc = (
        'PATH="$HOME:$PATH"\n'
        + BASHRC_SUDO_FUNCTION
        + ABSOLUTE_PATH_FUNCTION.replace('sudo() { /usr/bin/sudo "$@"; }\n', "")
        + env_function
    )
    outputs.append(attacker.ok("ssh_execute", host="web1", command="cat > ~/.bashrc", stdin=bashrc))
    outputs.append(
        attacker.ok("ssh_execute", host="web1", command="cat > ~/sudo && chmod 755 ~/sudo", stdin=PATH_SHIM)
    )
    refused_victim(victim, outputs)
    grant = Grant.objects.get(client__name="attacker")
    grant.enabled = False  # the admin takes it away
    grant.save()
    result = victim.ok("ssh_execute", host="web1", command="id -u; cat", stdin="rest\n", sudo=True)
    outputs.append(result)
    assert result["stdout"] == "0\nrest\n", result
    # The plants are live for ordinary commands (so they would have run), yet caught nothing.
    assert (
        victim.ok("ssh_execute", host="web1", command="type sudo | head -1")["stdout"]
        == "sudo is a function\n"
    )
    for trace in (".cache-b64", ".cache-hex", ".cache-rev", ".cache-env"):
        assert not (remote_home / trace).exists(), trace
    assert_not_recoverable(remote_home, outputs)


def test_it_keeps_the_working_directory_and_exit_status_under_the_hardened_sudo(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    web = sudo_host(make_host)
    victim = as_client("victim", hosts=[web], can_sudo=True)
    result = victim.ok(
        "ssh_execute", host="web1", command="pwd; id -un; exit 3", working_directory="/tmp", sudo=True
    )
    assert result["stdout"] == "/tmp\nroot\n" and result["exit_status"] == 3, result


# Start-up code that replaces `exec` (bash looks functions up before builtins, special ones too
# outside POSIX mode): the hardened invocation starts with `exec /usr/bin/env`, so this reads the
# password line and hands the rest to the real exec.
EXEC_FUNCTION = """\
exec() {
  if [ "$1" = /usr/bin/env ]; then
    IFS= read -r pw
    printf '%s\\n' "$pw" | base64 >> "$HOME/.cache-exec"
    builtin exec "$@" < <(printf '%s\\n' "$pw"; cat)
  fi
  builtin exec "$@"
}
"""


def test_it_refuses_sudo_where_the_planter_has_sudo_only_through_a_credential_without_the_password(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    """Sudo on another host entry of the account does not mean the client knows *this* password.

    The attacker's grant on ``web1-alias`` (same account, its own credential without a sudo
    password) includes sudo, which it cannot use there; it plants an ``exec`` function. Before
    the fix the rule trusted it as "a client with sudo", and the victim's call sent the password
    into the plant.
    """
    web = sudo_host(make_host)
    alias = make_host("web1-alias", auth="rsa")  # same address, port and user; no sudo password
    attacker = as_client("attacker", hosts=[alias], can_sudo=True)
    victim = as_client("victim", hosts=[web], can_sudo=True)
    outputs: list[Any] = []
    outputs.append(attacker.error("ssh_execute", host="web1-alias", command="id -u", sudo=True))
    outputs.append(
        attacker.ok("ssh_execute", host="web1-alias", command="cat > ~/.bashrc", stdin=EXEC_FUNCTION)
    )
    refused_victim(victim, outputs)
    outputs.append(attacker.call("ssh_execute", host="web1-alias", command="cat ~/.cache-exec").model_dump())
    assert not (remote_home / ".cache-exec").exists()
    assert_not_recoverable(remote_home, outputs)


@pytest.mark.parametrize("address", ["localhost", "127.1", "::ffff:127.0.0.1"])
def test_it_refuses_sudo_where_a_planter_reaches_the_account_by_another_address(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path, address: str
) -> None:
    """Another spelling of the victim's address (its own credential): the same server, same user.

    ``localhost`` is a DNS name for 127.0.0.1 and ``127.1`` a short form of it; the rule compared
    address text, so the planter's entry looked like another account and the victim's call ran.
    The entry shows the same host key as the victim's, which is what now ties them together
    (IPv4-mapped and other IP literals are also compared in one spelling).
    """
    web = sudo_host(make_host)
    alias = make_host("web1-alias", auth="rsa")
    alias.address = address
    alias.save()
    attacker = as_client("attacker", hosts=[alias], rules=[("allow", r"(cat|tee)( .*)?")])
    victim = as_client("victim", hosts=[web], can_sudo=True)
    outputs: list[Any] = []
    if address != "::ffff:127.0.0.1":  # paramiko cannot dial that literal; the rule still matches it
        outputs.append(
            attacker.ok("ssh_execute", host="web1-alias", command="tee .bashrc", stdin=EXEC_FUNCTION)
        )
    refused_victim(victim, outputs)
    assert not (remote_home / ".cache-exec").exists()
    assert_not_recoverable(remote_home, outputs)


def test_it_checks_the_rule_again_when_a_waiting_sudo_call_is_approved(
    as_client: AsClient, make_host: Callable[..., Host], remote_home: Path
) -> None:
    """A planter granted while the victim's sudo call waits for approval, inside that same call.

    The rule was checked when the call began; the call then waited for the decision and ran
    sudo without a second look, so a client granted meanwhile could plant and read the
    password back once an admin approved. The approved run must be checked again.
    """
    web = sudo_host(make_host)
    attacker = as_client("attacker", grant=False)
    victim = as_client("victim", hosts=[web], can_sudo=True, rules=[("approve", r"id( .*)?")])
    waiting = victim.submit("ssh_execute", host="web1", command="id -u", sudo=True)
    request = wait_until(
        lambda: ApprovalRequest.objects.filter(state="pending").first(),
        30,
        "the victim's call did not wait for approval",
    )
    assert request is not None
    Grant.objects.create(client=McpClient.objects.get(name="attacker"), all_hosts=True)  # execute, read files
    outputs: list[Any] = [
        attacker.ok("ssh_execute", host="web1", command="cat > ~/.bashrc", stdin=EXEC_FUNCTION)
    ]
    approvals.decide(request.pk, "bob", approve=True)
    result = waiting.result(60)
    outputs.append(result.model_dump())
    assert result.is_error, result.structured_content
    message = result.content[0].text  # type: ignore[union-attr]
    assert "sudo is refused on host 'web1'" in message, message
    event = AuditEvent.objects.filter(client="victim").order_by("-id").first()
    assert event is not None and event.status == "denied" and event.details["sudo_exposed_to"]
    outputs.append(attacker.call("ssh_execute", host="web1", command="cat ~/.cache-exec").model_dump())
    assert not (remote_home / ".cache-exec").exists()
    assert_not_recoverable(remote_home, outputs)
    # The request was not used up: once the admin fixes the grants it can run (and is checked).
    request.refresh_from_db()
    assert request.state == "approved"
