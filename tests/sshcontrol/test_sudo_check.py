"""`sshcontrol check` reports a sudo password that a client without sudo could capture (sshcontrol.W020)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from hosts.models import Credential, Grant, Host, McpClient

pytestmark = pytest.mark.django_db


def check_output() -> str:
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_it_warns_about_a_sudo_password_others_could_capture_and_stops_once_fixed() -> None:
    credential = Credential.objects.create(name="web1-cred", kind="password")
    credential.set_sudo_password("root-pw")
    credential.save()
    web = Host.objects.create(name="web1", address="10.0.0.1", username="app", credential=credential)
    admin = Grant.objects.create(client=McpClient.objects.create(name="admin-agent"), can_sudo=True)
    admin.hosts.set([web])
    assert "sshcontrol.W020" not in check_output()

    reader = Grant.objects.create(client=McpClient.objects.create(name="reader"), read_only=True)
    reader.hosts.set([web])
    output = check_output()
    assert "sshcontrol.W020" in output
    assert "sudo on host 'web1' is refused (for 'admin-agent')" in output
    assert f"client 'reader' can run commands without sudo (grant #{reader.pk})" in output
    assert "separate login account for sudo" in output and "root-pw" not in output

    reader.can_execute = False  # reading files cannot plant start-up code
    reader.save()
    assert "sshcontrol.W020" not in check_output()
