"""OpenID Connect sign-in for the admin, against the real provider of tests/oidc, in Chromium.

A real ``mcp_serve --transport streamable-http`` serves the admin with
``SSHCONTROL_ADMIN_OIDC_ISSUER`` set; the browser clicks "Sign in with your identity provider",
the provider signs the test user in (its interaction is automatic), and the admin opens.
``page`` is the browser tests' Chromium (tests/browser/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.mcp.test_http import RunningServer, start_server, stop_server
from tests.oidc.idp import Idp, available, rsa_key
from tests.sshd import free_port

pytestmark = pytest.mark.skipif(bool(available()), reason=available() or "ok")


@pytest.fixture(scope="module")
def sso(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Idp, RunningServer]]:
    tmp = tmp_path_factory.mktemp("sso")
    port = free_port()
    idp = Idp(tmp, admin_redirect=f"http://127.0.0.1:{port}/oidc/callback/")
    idp.start([rsa_key()])
    try:
        proc, server = start_server(
            tmp,
            port=port,
            **{
                "SSHCONTROL_ADMIN_OIDC_ISSUER": idp.issuer,
                "SSHCONTROL_ADMIN_OIDC_CLIENT_ID": "admin-ui",
                "SSHCONTROL_ADMIN_OIDC_CLIENT_SECRET": "admin-ui-secret",
                "SSHCONTROL_ADMIN_OIDC_SCOPES": "openid email groups",
                "SSHCONTROL_ADMIN_OIDC_STAFF_GROUPS": "operators",
                "SSHCONTROL_ADMIN_OIDC_SUPERUSER_GROUPS": "Platform Admins",
            },
        )
        yield idp, server
        stop_server(proc, server)
    finally:
        idp.stop()  # also when the server did not start: no provider is left running


def sign_in(page: Any, server: RunningServer) -> None:
    page.goto(f"{server.url}/admin/")
    page.click("#sso-login")
    page.wait_for_load_state()


def test_it_signs_an_idp_admin_into_the_admin_as_a_superuser(
    sso: tuple[Idp, RunningServer], page: Any
) -> None:
    idp, server = sso
    idp.set_account("carol-sub", email="carol@example.com", groups=["Platform Admins"])
    idp.login_as("carol-sub")
    sign_in(page, server)
    assert page.url.rstrip("/").endswith("/admin"), page.url
    assert page.locator("#logout-form").count() == 1  # signed in
    user = get_user_model().objects.get(username="sso:carol@example.com")
    assert user.is_superuser and user.is_staff and not user.has_usable_password()


def test_it_refuses_an_idp_user_outside_the_admin_groups(sso: tuple[Idp, RunningServer], page: Any) -> None:
    idp, server = sso
    idp.set_account("dave-sub", email="dave@example.com", groups=["developers"])
    idp.login_as("dave-sub")
    sign_in(page, server)
    assert "sso=failed" in page.url
    assert "give no access" in page.content()
    assert not get_user_model().objects.filter(username="sso:dave@example.com").exists()


def test_it_keeps_local_accounts_apart_from_idp_identities(sso: tuple[Idp, RunningServer], page: Any) -> None:
    idp, server = sso
    local = get_user_model().objects.create_superuser(
        "admin", email="erin@example.com", password="break-glass-pw"
    )
    # The IdP vouches for the local admin's e-mail address: it still gets only its own account.
    idp.set_account("erin-sub", email="erin@example.com", groups=["operators"])
    idp.login_as("erin-sub")
    sign_in(page, server)
    sso_user = get_user_model().objects.get(username="sso:erin@example.com")
    assert sso_user.pk != local.pk and sso_user.is_staff and not sso_user.is_superuser
    # Break-glass: the local account still signs in with its password.
    page.context.clear_cookies()
    page.goto(f"{server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "break-glass-pw")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert page.url.rstrip("/").endswith("/admin"), page.url
    assert page.locator("#logout-form").count() == 1
