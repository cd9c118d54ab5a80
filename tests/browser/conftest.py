"""Real Chromium (Debian's package) driven by Playwright against the admin in a live server.

pytest-django's ``live_server`` runs the project's WSGI app in a thread of this process and
serves static files through ``django.contrib.staticfiles`` finders, so the admin looks as it
does under ``serve``. Sessions opened by the app (Test connection) live in this process too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
def browser(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Chromium for one test.

    Not session-scoped: Playwright's sync API keeps an event loop running on this thread
    while it is open, and Django refuses ORM calls on a thread with a running loop. So the
    browser starts after the test database is ready, is closed before the next test, and
    this test's own ORM calls are let through (nothing in them is async).
    """
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; scripts/bootstrap installs Debian's chromium for the tests")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); browser tests need it")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(15_000)
    # The admin's app navigation sidebar starts collapsed, leaving the lists their full width.
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def screenshot() -> Any:
    """``screenshot(page, "name")`` saves docs/images/name.png, only when SSHCONTROL_SCREENSHOTS=1.

    CI leaves the tracked images alone; regenerate them with
    ``SSHCONTROL_SCREENSHOTS=1 .venv/bin/pytest tests/browser``.
    """

    def take(page: Any, name: str, full_page: bool = False) -> None:
        if os.environ.get("SSHCONTROL_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    return take
