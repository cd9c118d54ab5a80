"""``sshcontrol check --deploy`` behind a TLS proxy: the settings that make it clean.

Run as the real console script on a fresh data directory, as an operator would.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.core.test_settings import run_cli

BEHIND_TLS_PROXY = {
    "SSHCONTROL_SECURE_COOKIES": "true",
    "SSHCONTROL_HSTS_SECONDS": "31536000",
    "SSHCONTROL_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SSHCONTROL_HSTS_PRELOAD": "true",
    "SSHCONTROL_SSL_REDIRECT": "true",
    "SSHCONTROL_TRUSTED_PROXIES": "10.0.0.2",
}


def deploy_check(tmp_path: Path, **env: str) -> str:
    checked = run_cli(
        tmp_path,
        "check",
        "--deploy",
        SSHCONTROL_SECRET_KEY=secrets.token_urlsafe(60),
        SSHCONTROL_ALLOWED_HOSTS="sshcontrol.example.org",
        **env,
    )
    return checked.stdout + checked.stderr


def test_it_warns_about_cookies_hsts_and_redirect_by_default(tmp_path: Path) -> None:
    report = deploy_check(tmp_path)
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in report


def test_it_passes_the_deploy_check_behind_a_tls_proxy(tmp_path: Path) -> None:
    report = deploy_check(tmp_path, **BEHIND_TLS_PROXY)
    assert "System check identified no issues (0 silenced)." in report, report


def test_it_reports_a_malformed_proxy_setting(tmp_path: Path) -> None:
    report = deploy_check(tmp_path, **{**BEHIND_TLS_PROXY, "SSHCONTROL_HSTS_SECONDS": "a year"})
    assert "sshcontrol.E051" in report and "SSHCONTROL_HSTS_SECONDS must be an integer" in report


def test_it_reads_the_proxy_ssl_header_as_django_expects_it(tmp_path: Path) -> None:
    show = "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    for configured, expected in (
        ("", "None"),
        ("X-Forwarded-Proto", "('HTTP_X_FORWARDED_PROTO', 'https')"),
        ("X-Forwarded-Ssl: on", "('HTTP_X_FORWARDED_SSL', 'on')"),
    ):
        shown = run_cli(tmp_path, "shell", "-c", show, SSHCONTROL_PROXY_SSL_HEADER=configured)
        assert shown.stdout.strip().splitlines()[-1] == expected, shown.stderr
