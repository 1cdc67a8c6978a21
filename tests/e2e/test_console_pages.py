"""The console's workspace pages in a real browser (Debian's headless Chromium through
Playwright) against a real `tidings serve`: sign in, write an audience rule with a mistake,
fix it where the error shows and see the count, add a suppression, open a profile's consent
history; then the same pages at phone width (375px), with every input labelled.

Screenshots go to var/artifacts/console/ (TIDINGS_ARTIFACTS_DIR overrides it), beside those of
tests/e2e/test_console.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_console import ADMIN, PASSWORD, shot, sign_in
from tests.e2e.test_serve import KEY, Server, start_server, stop_server

pytestmark = pytest.mark.e2e
PAGES = ("/profiles", "/audiences/new", "/rules/new", "/suppressions", "/channels", "/webhooks")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path, TIDINGS_BOOTSTRAP_API_KEY=KEY)
    try:
        subprocess.run(
            [sys.executable, "-m", "tidings", "users", "create", ADMIN, "--password-stdin"],
            input=PASSWORD + "\n",
            env=running.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        yield running
    finally:
        if running.process.poll() is None:
            stop_server(running)


def unlabelled_inputs(page: Page) -> list[str]:
    """Inputs, selects and textareas a screen reader could not name."""
    result: list[str] = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
        .filter((el) => el.type !== 'hidden')
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map((el) => el.name || el.id)"""
    )
    return result


def test_audience_suppression_and_consent_history_in_the_browser(server: Server, browser: Browser):
    base = server.base_url
    with server.client() as api:
        for email, plan in (("ada@example.com", "pro"), ("alan@example.com", "free")):
            put = api.put(
                f"/v1/profiles/email/{email}",
                json={"attributes": {"plan": plan}, "consent": {"email": "in"}},
            )
            assert put.status_code == 201, put.text
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested_hosts: set[str] = set()
    page.on("request", lambda request: requested_hosts.add(httpx.URL(request.url).host))
    sign_in(page, base, ADMIN, PASSWORD)

    # An audience: a mistake shown where it is, fixed, then the count.
    page.get_by_role("link", name="Audiences", exact=True).click()
    page.get_by_role("link", name="New rule audience").click()
    page.get_by_label("Name").fill("Pro customers")
    rule = page.get_by_label("Rule", exact=True)
    rule.click()
    page.keyboard.type('consent.email == "in"\nand attributes.plan = "pro"')
    error = page.locator("#error-rule")
    expect(error).to_contain_text("line 2, column 21")
    expect(rule).to_have_attribute("aria-invalid", "true")
    shot(page, "pages-01-audience-rule-error")
    rule.fill('consent.email == "in"\nand attributes.plan == "pro"')
    expect(page.locator("#estimate")).to_have_text("1 profile match now.")
    expect(error).to_be_hidden()
    shot(page, "pages-02-audience-count")
    page.get_by_role("button", name="Create the audience").click()
    expect(page.get_by_role("heading", name="Pro customers")).to_be_visible()
    expect(page.locator("#saved-estimate")).to_have_text("1 profile")

    # A suppression, added from the keyboard.
    page.get_by_role("link", name="Suppressions").click()
    page.get_by_label("Address, phone number or domain").fill("bounced@example.org")
    page.get_by_label("Reason (optional)").fill("asked by phone")
    page.get_by_label("Reason (optional)").press("Enter")
    expect(page.get_by_role("status")).to_contain_text("bounced@example.org suppressed")
    row = page.locator("#suppressions tr", has_text="bounced@example.org")
    expect(row).to_contain_text("console")
    expect(row).to_contain_text("asked by phone")
    shot(page, "pages-03-suppressions")

    # A profile: found by the start of its address; consent changed here shows its source.
    page.get_by_role("link", name="Profiles").click()
    page.get_by_label("Identity").fill("ada@")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="email: ada@example.com").click()
    consent = page.locator("#consent-table")
    expect(consent.locator("tr", has_text="email")).to_contain_text("api")
    page.get_by_label("Channel").select_option("email")
    page.get_by_label("Status").select_option("out")
    page.get_by_role("button", name="Change consent").click()
    expect(consent.locator("tr", has_text="email")).to_contain_text("out")
    expect(consent.locator("tr", has_text="email")).to_contain_text("console")
    shot(page, "pages-04-profile-consent")

    # Phone width: every page readable (no sideways scroll of the page) and labelled.
    phone = browser.new_page(viewport={"width": 375, "height": 800})
    phone.on("request", lambda request: requested_hosts.add(httpx.URL(request.url).host))
    sign_in(phone, base, ADMIN, PASSWORD)
    for path in PAGES:
        phone.goto(base + path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
        assert unlabelled_inputs(phone) == [], path
        shot(phone, "pages-05-phone" + path.replace("/", "-"))
    assert requested_hosts == {"127.0.0.1"}
