"""Console sign-in: argon2id hashes, session cookies, CSRF on every POST, roles enforced on
the server, and the backoff of repeated failures."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.console_members import PASSWORD, Members
from tests.integration.helpers import create_configuration
from tidings.clock import utcnow
from tidings.console.pages import SECTIONS
from tidings.errors import AuthenticationFailed, RateLimited
from tidings.users import service as users
from tidings.users.models import console_users
from tidings.users.schemas import Role

pytestmark = pytest.mark.integration
# POST routes of the console that change nothing: they need a session and its CSRF token, not
# a role.
READ_ONLY_POSTS = {
    "/sign-in",
    "/sign-out",
    "/campaigns/{campaign_id}/preview",
    "/audiences/estimate",
}


def browser(tenant: Tenant) -> TestClient:
    # The runtime's public URL is https: cookies are Secure and travel over https only.
    return TestClient(tenant.client.app, base_url="https://testserver", follow_redirects=False)


def hidden_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Signs in and returns the session's CSRF token (from the page it lands on)."""
    page = client.get("/sign-in")
    response = client.post(
        "/sign-in",
        data={"email": email, "password": password, "csrf_token": hidden_token(page.text)},
    )
    assert response.status_code == 303, response.text
    landing = client.get(response.headers["location"])
    assert landing.status_code == 200, landing.text
    return hidden_token(landing.text)


def test_passwords_are_stored_as_argon2id_hashes(tenant: Tenant, members: Members):
    with tenant.runtime.db.read() as conn:
        stored = conn.execute(
            sa.select(console_users.c.password_hash).where(console_users.c.email == members.admin)
        ).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert users.password_matches(stored, PASSWORD)
    assert not users.password_matches(stored, PASSWORD + "!")


def test_sign_in_sets_a_session_cookie_that_scripts_and_other_sites_cannot_use(
    tenant: Tenant, members: Members
):
    client = browser(tenant)
    assert client.get("/campaigns").headers["location"].startswith("/sign-in")
    page = client.get("/sign-in")
    response = client.post(
        "/sign-in",
        data={"email": members.editor, "password": PASSWORD, "csrf_token": hidden_token(page.text)},
    )
    assert response.status_code == 303
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith("tidings_session=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= flags
    listing = client.get("/campaigns")
    assert listing.status_code == 200 and members.editor in listing.text
    assert "Content-Security-Policy" in listing.headers


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(
    tenant: Tenant, members: Members
):
    client = browser(tenant)
    token = hidden_token(client.get("/sign-in").text)
    wrong = client.post(
        "/sign-in", data={"email": members.admin, "password": "nope-nope-nope", "csrf_token": token}
    )
    unknown = client.post(
        "/sign-in",
        data={
            "email": f"x{uuid.uuid4().hex}@example.com",
            "password": PASSWORD,
            "csrf_token": token,
        },
    )
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong email or password" in wrong.text and "wrong email or password" in unknown.text
    assert "tidings_session" not in wrong.headers.get("set-cookie", "")


def test_sign_in_without_its_csrf_token_is_refused(tenant: Tenant, members: Members):
    client = browser(tenant)
    client.get("/sign-in")
    response = client.post("/sign-in", data={"email": members.admin, "password": PASSWORD})
    assert response.status_code == 403
    assert "tidings_session" not in response.headers.get("set-cookie", "")


def test_a_form_post_without_the_csrf_token_is_refused(tenant: Tenant, members: Members):
    client = browser(tenant)
    token = sign_in(client, members.editor)
    body = {"name": "Receipt", "category": "transactional"}
    refused = client.post("/campaigns/new", data=body)
    forged = client.post("/campaigns/new", data={**body, "csrf_token": "x" * 43})
    assert refused.status_code == forged.status_code == 403
    listing = tenant.client.get("/v1/campaigns").json()["items"]
    assert listing == []
    accepted = client.post("/campaigns/new", data={**body, "csrf_token": token})
    assert accepted.status_code == 303, accepted.text
    assert [c["name"] for c in tenant.client.get("/v1/campaigns").json()["items"]] == ["Receipt"]


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: ids.get(m.group(1), "1"), path)


def test_a_viewer_can_read_but_every_changing_console_route_refuses_it(
    tenant: Tenant, members: Members
):
    configuration = create_configuration(tenant.client, category="transactional")
    campaign = tenant.client.post(
        "/v1/campaigns",
        json={
            "name": "Receipt",
            "category": "transactional",
            "channel": "email",
            "channel_configuration_id": configuration["id"],
            "content": {"subject": "Hi {{ profile.firstName }}", "html": "<p>Hi</p>"},
            "audience": {"create_new_profiles": True},
        },
    ).json()
    before = tenant.client.get(f"/v1/campaigns/{campaign['id']}").json()
    keys_before = tenant.client.get("/v1/api-keys").json()
    client = browser(tenant)
    token = sign_in(client, members.viewer)
    assert client.get(f"/campaigns/{campaign['id']}").status_code == 200
    assert client.get(f"/campaigns/{campaign['id']}/steps/3").status_code == 200
    ids = {"campaign_id": campaign["id"], "step": "1", "key_id": keys_before["items"][0]["id"]}
    posts = sorted(
        {
            route.path
            for section in SECTIONS
            for route in section.routes
            if isinstance(route, APIRoute) and "POST" in route.methods
        }
        - READ_ONLY_POSTS
    )
    assert "/campaigns/{campaign_id}/activate" in posts and "/api-keys" in posts
    for path in posts:
        for step in ("1", "3", "5") if "{step}" in path else ("1",):
            url = _concrete(path, {**ids, "step": step})
            response = client.post(
                url,
                data={"csrf_token": token, "name": "changed", "subject": "changed"},
                headers={"X-CSRF-Token": token},
            )
            assert response.status_code == 403, (url, response.status_code, response.text)
    after = tenant.client.get(f"/v1/campaigns/{campaign['id']}").json()
    assert after == before
    assert tenant.client.get("/v1/api-keys").json() == keys_before
    # Preview reads only: a viewer may use it.
    preview = client.post(
        f"/campaigns/{campaign['id']}/preview",
        json={"profile": '{"firstName": "Ada"}', "context": "{}"},
        headers={"X-CSRF-Token": token},
    )
    assert preview.status_code == 200 and preview.json()["content"]["subject"] == "Hi Ada"


def test_an_editor_cannot_reach_admin_routes(tenant: Tenant, members: Members):
    client = browser(tenant)
    token = sign_in(client, members.editor)
    response = client.post(
        "/api-keys", data={"csrf_token": token, "name": "ci", "scope": "executions:trigger"}
    )
    assert response.status_code == 403
    admin = browser(tenant)
    admin_token = sign_in(admin, members.admin)
    created = admin.post(
        "/api-keys", data={"csrf_token": admin_token, "name": "ci", "scope": "executions:trigger"}
    )
    assert created.status_code == 201
    secret = re.search(r'id="new-secret" tabindex="0">([^<]+)<', created.text)
    assert secret and tenant.runtime.authenticator.authenticate(secret.group(1))
    # Shown once: the listing never shows it again.
    assert secret.group(1) not in admin.get("/api-keys").text


def test_signing_out_ends_the_session(tenant: Tenant, members: Members):
    client = browser(tenant)
    token = sign_in(client, members.admin)
    cookie = client.cookies.get("tidings_session")
    assert client.post("/sign-out", data={"csrf_token": token}).status_code == 303
    replay = browser(tenant)
    replay.cookies.set("tidings_session", cookie or "", domain="testserver")
    assert replay.get("/campaigns").status_code == 303
    assert users.session_for(tenant.runtime.db, cookie or "", utcnow()) is None


def test_a_session_sees_its_own_workspace_only(
    tenant: Tenant, other_tenant: Tenant, members: Members
):
    theirs = other_tenant.client.post(
        "/v1/campaigns", json={"name": "Theirs", "category": "marketing", "channel": "email"}
    ).json()
    client = browser(tenant)
    sign_in(client, members.admin)
    other = client.get(f"/campaigns/{theirs['id']}")
    assert other.status_code == 404 and other.headers["content-type"].startswith("text/html")
    assert "Theirs" not in client.get("/campaigns").text


def test_repeated_failures_lock_the_account_for_that_client_with_growing_waits(
    tenant: Tenant, members: Members
):
    db, now = tenant.runtime.db, utcnow()
    for _ in range(users.FREE_FAILURES):
        with pytest.raises(AuthenticationFailed):
            users.authenticate(db, members.admin, "wrong-password", "10.0.0.1", now)
    # Locked for this client, even with the right password; another client is not.
    with pytest.raises(RateLimited) as locked:
        users.authenticate(db, members.admin, PASSWORD, "10.0.0.1", now)
    assert 0 < locked.value.retry_after <= users.FIRST_LOCK.total_seconds()
    assert users.authenticate(db, members.admin, PASSWORD, "10.0.0.2", now)["email"] == (
        members.admin
    )
    later = now + users.FIRST_LOCK + timedelta(seconds=1)
    with pytest.raises(AuthenticationFailed):
        users.authenticate(db, members.admin, "wrong-password", "10.0.0.1", later)
    with pytest.raises(RateLimited) as longer:
        users.authenticate(db, members.admin, PASSWORD, "10.0.0.1", later)
    assert longer.value.retry_after > users.FIRST_LOCK.total_seconds()
    # A success after the wait clears the count.
    much_later = later + users.MAX_LOCK
    assert users.authenticate(db, members.admin, PASSWORD, "10.0.0.1", much_later)
    with pytest.raises(AuthenticationFailed):
        users.authenticate(db, members.admin, "wrong-password", "10.0.0.1", much_later)
    assert users.authenticate(db, members.admin, PASSWORD, "10.0.0.1", much_later)


def test_the_sign_in_page_answers_a_locked_account_with_429(tenant: Tenant, members: Members):
    client = browser(tenant)
    token = hidden_token(client.get("/sign-in").text)
    for _ in range(users.FREE_FAILURES):
        client.post(
            "/sign-in", data={"email": members.viewer, "password": "x" * 12, "csrf_token": token}
        )
    response = client.post(
        "/sign-in", data={"email": members.viewer, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 429 and "too many failed sign-ins" in response.text


def test_short_passwords_are_refused(tenant: Tenant):
    from tidings.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        users.create_user(
            tenant.runtime.db,
            "short@example.com",
            "short",
            tenant.workspace_id,
            Role.VIEWER,
            utcnow(),
        )
    assert refused.value.errors[0].field == "password"
