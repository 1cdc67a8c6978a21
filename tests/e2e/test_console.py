"""The console in a real browser (Debian's headless Chromium through Playwright) against a real
`tidings serve`: sign in, author a transactional email campaign through the seven steps with a
live preview, activate it, trigger it with the curl the page shows, and find the email in the
dev mailbox and the count in the report.

Screenshots of each step go to var/artifacts/console/ (TIDINGS_ARTIFACTS_DIR overrides it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_serve import KEY, Server, start_server, stop_server

pytestmark = pytest.mark.e2e
ADMIN = "admin@example.com"
PASSWORD = "a long console password"
ARTIFACTS = Path(
    os.environ.get(
        "TIDINGS_ARTIFACTS_DIR", Path(__file__).resolve().parents[2] / "var/artifacts/console"
    )
)


@pytest.fixture
def console_server(tmp_path: Path) -> Iterator[Server]:
    # No SMTP relay: emails land in the dev mailbox, as with `make run`.
    server = start_server(tmp_path, TIDINGS_BOOTSTRAP_API_KEY=KEY)
    try:
        # What `make run` prints while the console has no user: how to make the first one.
        assert (
            "tidings users create you@example.com --workspace default --role admin"
            in server.log_path.read_text()
        )
        subprocess.run(
            [sys.executable, "-m", "tidings", "users", "create", ADMIN, "--password-stdin"],
            input=PASSWORD + "\n",
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        yield server
    finally:
        if server.process.poll() is None:
            stop_server(server)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()


def test_a_transactional_email_campaign_from_sign_in_to_the_report(
    console_server: Server, browser: Browser
):
    base = console_server.base_url
    with console_server.client() as api:
        configuration = api.post(
            "/v1/channel-configurations",
            json={
                "name": "Receipts",
                "channel": "email",
                "category": "transactional",
                "email": {"from_address": "shop@example.com", "from_name": "Example Shop"},
            },
        )
        assert configuration.status_code == 201, configuration.text
        # A stored profile, for the preview's picker.
        stored = api.put(
            "/v1/profiles/email/grace@example.com", json={"attributes": {"firstName": "Grace"}}
        )
        assert stored.status_code == 201, stored.text
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested_hosts: set[str] = set()
    page.on("request", lambda request: requested_hosts.add(httpx.URL(request.url).host))

    page.goto(base + "/")
    shot(page, "00-sign-in")
    sign_in(page, base, ADMIN, PASSWORD)
    shot(page, "01-campaigns")

    # Step 1: properties.
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label("Name", exact=True).fill("Order confirmation")
    page.get_by_label("Description").fill("Sent when an order is placed")
    page.get_by_label("Tags").fill("orders, e2e")
    page.locator("input[name=category][value=transactional]").check()
    shot(page, "02-step-1-properties")
    page.get_by_role("button", name="Create and continue").click()

    # Step 2: action.
    expect(page.get_by_role("heading", name="2. Action")).to_be_visible()
    page.get_by_label("Channel", exact=True).select_option("email")
    page.get_by_label("Channel configuration").select_option(label="Receipts (email)")
    shot(page, "03-step-2-action")
    page.get_by_role("button", name="Save and continue").click()

    # Step 3: content with a personalized subject, previewed live.
    expect(page.get_by_role("heading", name="3. Content")).to_be_visible()
    page.get_by_label("Subject").fill("Order {{ context.order.id }} for {{ profile.firstName }}")
    page.get_by_label("HTML body").fill(
        "<h1>Thanks, {{ profile.firstName }}</h1><p>Order {{ context.order.id }} is placed.</p>"
    )
    page.get_by_label("…or sample profile attributes (JSON)").fill('{"firstName": "Ada"}')
    page.get_by_label("Sample context (JSON)").fill('{"order": {"id": "A-1"}}')
    subject = page.locator("#preview-subject")
    expect(subject).to_have_text("Order A-1 for Ada")
    expect(page.frame_locator("#preview-frame").locator("h1")).to_have_text("Thanks, Ada")
    variables = page.locator("#preview-variables")
    expect(variables).to_contain_text("profile.firstName")
    expect(variables).to_contain_text("context.order.id")
    shot(page, "04-step-3-content-preview")
    # The preview follows the sample context.
    page.get_by_label("Sample context (JSON)").fill('{"order": {"id": "B-2"}}')
    expect(subject).to_have_text("Order B-2 for Ada")
    page.get_by_role("button", name="Mobile").click()
    expect(page.locator("#preview-frame")).to_have_class("preview-frame mobile")
    shot(page, "05-step-3-mobile-preview")
    # A template error shows inline, with its line and column, until it is fixed.
    html = page.get_by_label("HTML body")
    html.fill("<h1>Thanks, {{ profile.firstName </h1>\n<p>Order {{ context.order.id }}</p>")
    inline = page.locator('[id="error-content.html"]')
    expect(inline).to_be_visible()
    expect(inline).to_contain_text("line 1, column")
    expect(html).to_have_attribute("aria-invalid", "true")
    shot(page, "06-step-3-template-error")
    html.fill("<h1>Thanks, {{ profile.firstName }}</h1>\n<p>Order {{ context.order.id }}</p>")
    expect(inline).to_be_hidden()
    expect(page.frame_locator("#preview-frame").locator("h1")).to_have_text("Thanks, Ada")
    expect(page.locator("#save-state")).to_have_text("Draft saved.")
    # A stored profile, picked from the suggestions the start of its address brings.
    picker = page.get_by_label("Test profile: a stored profile")
    picker.fill("gra")
    suggestion = page.locator("#preview-identity-options option")
    expect(suggestion).to_have_attribute("value", "grace@example.com")
    picker.fill("grace@example.com")  # what choosing the suggestion (arrow keys, Enter) sets
    expect(subject).to_have_text("Order B-2 for Grace")
    picker.fill("")
    expect(subject).to_have_text("Order B-2 for Ada")
    page.get_by_role("button", name="Save and continue").click()

    # Step 4: audience.
    expect(page.get_by_role("heading", name="4. Audience")).to_be_visible()
    expect(page.get_by_label("Identity namespace of recipients")).to_have_value("email")
    page.get_by_label("Create a profile for a recipient").check()
    shot(page, "07-step-4-audience")
    page.get_by_role("button", name="Save and continue").click()

    # Step 5: schedule.
    expect(page.get_by_role("heading", name="5. Schedule")).to_be_visible()
    page.get_by_label("Rate").fill("50")
    shot(page, "08-step-5-schedule")
    page.get_by_role("button", name="Save and continue").click()

    # Step 6: review and activate.
    expect(page.get_by_role("heading", name="6. Review and activate")).to_be_visible()
    expect(page.locator("#review-ready")).to_be_visible()
    shot(page, "09-step-6-review")
    page.get_by_role("button", name="Activate").click()
    expect(page.locator("#campaign-status")).to_have_text("live")

    # Step 7: the curl the page shows, run as it is.
    command = page.locator("#curl-native").inner_text()
    assert "profile" in command and "context.order.id" in command, command
    expect(page.locator("#curl-ajo")).to_contain_text("/ajo/im/executions/unitary")
    shot(page, "10-step-7-trigger")
    page.get_by_role("button", name="Send proof").click()
    expect(page.get_by_role("status")).to_contain_text("Proof queued to admin@example.com")
    run = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "TIDINGS_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    accepted = json.loads(run.stdout)
    assert accepted["accepted"] == 1, run.stdout

    # The email in the dev mailbox, personalized with what the command sent.
    expected_subject = "Order context.order.id for profile.firstName"
    deadline = time.monotonic() + 20
    page.goto(base + "/dev/mailbox")
    while expected_subject not in page.content() and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(page.get_by_role("link", name=expected_subject, exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="[Proof] " + expected_subject, exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="someone@example.com")).to_be_visible()
    shot(page, "11-dev-mailbox")

    # The count in the report.
    deadline = time.monotonic() + 20
    page.goto(base + "/campaigns")
    page.get_by_role("link", name="Order confirmation").click()
    while page.locator("#count-sent").inner_text() != "1" and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(page.locator("#count-sent")).to_have_text("1")
    expect(page.locator("#latest-messages")).to_contain_text("someone@example.com")
    expect(page.locator("svg.chart g[data-label=sent]")).to_have_attribute("data-count", "1")
    shot(page, "12-report")
    # Readable at phone width: nothing wider than the screen.
    campaign_url = page.url
    page.set_viewport_size({"width": 390, "height": 844})
    for name, url in (
        ("13-phone-report", campaign_url),
        ("14-phone-content", campaign_url + "/steps/3"),
    ):
        page.goto(url)
        shot(page, name)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
    # Nothing was fetched from anywhere but Tidings.
    assert requested_hosts <= {"127.0.0.1"}, requested_hosts
