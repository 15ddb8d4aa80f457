"""The service-down banner in a real browser: a page left open (no click, no reload) shows the banner once the
service stops, and drops it once a service beats again: it follows the heartbeat on its own, like the sidebar
badge (every page draws it through pages._common.init_page; tests/ui/test_ui_pages.py checks each page)."""
from __future__ import annotations

import pytest

from tests.e2e.test_browser_e2e import until
from ui.widgets import SERVICE_DOWN

pytestmark = pytest.mark.timeout(180)


def banner(page) -> bool:
    return page.locator('[data-testid="stMain"]').get_by_text(SERVICE_DOWN, exact=False).count() > 0


def test_banner_when_the_service_stops_and_starts_then_an_open_page_follows_without_a_click(stack, browser_page):
    page = browser_page
    page.goto(f"{stack.ui_url}/orders")
    page.get_by_role("heading", name="Positions & Orders", level=1).wait_for()
    until(lambda: page.get_by_text("Service up", exact=False).count() > 0, "the sidebar badge: service up")
    assert not banner(page)
    stack._stop("service")  # SIGTERM: its heartbeats say 'stopped'
    until(lambda: banner(page), "the banner on the open page after the service stopped", timeout=30)
    stack._spawn("service", ["-m", "services", "--db", str(stack.db_path), "--log-file", str(stack.tmp / "svc.log")])
    until(lambda: not banner(page), "the banner gone once the service beats again", timeout=60)
