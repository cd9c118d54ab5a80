"""A command with bidi controls, as Chromium draws it: every hidden character visible, in order.

Drawn raw, ``echo done <RLI>; touch x <LRI># harmless<PDI><PDI>`` shows the ``#`` left of
``touch``, so the dangerous part looks commented out (issue 9 item 3). The admin must show
each hidden character as ``<U+XXXX>``, draw the text in the order the shell reads it, and
warn on the decision page.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Locator, Page, expect

from audit import writer
from audit.chain import reset_chain_state
from hosts.access_models import ApprovalRequest
from hosts.clients import create_client
from hosts.models import Host

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ADMIN = "root"
ADMIN_PASSWORD = "browser-test-only-51d7"  # a throwaway account in the test database
ATTACK = "echo done \u2067; touch /tmp/pwned \u2066# harmless\u2069\u2069"
SHOWN = "echo done <U+2067>; touch /tmp/pwned <U+2066># harmless<U+2069><U+2069>"

# Where (top, left, in CSS pixels) ``needle`` is drawn inside an element's text.
_DRAWN_AT = """(root, needle) => {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.indexOf(needle);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + needle.length);
    const rect = range.getBoundingClientRect();
    return [rect.top, rect.left];
  }
  return null;
}"""


def drawn_at(locator: Locator, needle: str) -> tuple[float, float]:
    at = locator.evaluate(_DRAWN_AT, needle)
    assert at is not None, f"{needle!r} is not in {locator}"
    return float(at[0]), float(at[1])


def assert_drawn_in_order(locator: Locator) -> None:
    """``touch`` is drawn before the ``#`` (a line above, or left of it on one line): nothing looks
    commented out that is not."""
    (touch_top, touch_left), (hash_top, hash_left) = (
        drawn_at(locator, "touch"),
        drawn_at(locator, "#"),
    )
    same_line = abs(touch_top - hash_top) < 4
    assert touch_left < hash_left if same_line else touch_top < hash_top, (
        touch_top,
        touch_left,
        hash_top,
        hash_left,
    )


def test_an_admin_sees_hidden_characters_where_a_command_is_shown(live_server: Any, page: Page) -> None:
    reset_chain_state()  # the process may remember a chain position from another test's database
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    host = Host.objects.create(name="web1", address="10.0.0.1", username="deploy")
    client = create_client("agent", owner="alice").client
    event_id = writer.begin(
        tool="ssh_execute", actor="agent", client="agent", transport="stdio", host=host, command=ATTACK,
        session_id="s-bidi",
    )  # fmt: skip
    writer.complete(event_id, status="pending")
    now = timezone.now()
    request = ApprovalRequest.objects.create(
        client=client, host=host, command=ATTACK, requested_at=now, expires_at=now + timedelta(hours=1),
        audit_event_id=event_id,
    )  # fmt: skip

    page.goto(live_server.url + "/admin/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.locator("input[type=submit]").click()

    # The index band.
    item = page.locator(f"#approval-{request.pk} code")
    expect(item).to_have_text(SHOWN)
    assert_drawn_in_order(item)

    # The decision box: the escapes, the order, and a warning in words.
    page.goto(live_server.url + f"/admin/hosts/approvalrequest/{request.pk}/change/")
    decision = page.locator("#decision")
    box_text = decision.inner_text()
    assert SHOWN in box_text and "\u2067" not in box_text
    assert_drawn_in_order(decision.locator("pre"))
    warning = page.locator("#hidden-characters-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("invisible or control characters")
    expect(warning).to_contain_text("U+2067 RIGHT-TO-LEFT ISOLATE")
    expect(warning).to_contain_text("U+2069 POP DIRECTIONAL ISOLATE")
    # The highlighted escapes are shown on a coloured background, not as plain text.
    mark = decision.locator(".sc-hidden-char").first
    assert mark.evaluate("e => getComputedStyle(e).backgroundColor") not in (
        "rgba(0, 0, 0, 0)",
        "transparent",
    )
    expect(page.locator(".field-command_display pre")).to_have_text(SHOWN)

    # The audit list, the audit row and its session timeline.
    page.goto(live_server.url + "/admin/audit/auditevent/")
    cell = page.locator("#result_list td.field-short_command").first
    expect(cell).to_have_text(SHOWN)
    assert_drawn_in_order(cell)
    page.goto(live_server.url + f"/admin/audit/auditevent/{event_id}/change/")
    expect(page.locator(".field-command_block pre")).to_have_text(SHOWN)
    assert_drawn_in_order(page.locator(".field-command_block pre"))
    expect(page.locator(".audit-timeline tr[aria-current] td:nth-child(3) strong")).to_have_text(SHOWN)

    # The approval list.
    page.goto(live_server.url + "/admin/hosts/approvalrequest/")
    expect(page.locator("#result_list .field-command_short").first).to_contain_text("<U+2067>")
    assert "\u2067" not in page.locator("#content").inner_text()
