"""The preview's stored profile is picked, not typed: the content step offers the workspace's
profiles in a labelled datalist, the suggestions endpoint narrows them as one types, and a
picked identity previews with that profile's attributes."""

from __future__ import annotations

import re
import uuid
from html import unescape

import pytest

from tests.conftest import Tenant
from tests.integration.console_members import Members
from tests.integration.helpers import create_configuration
from tests.integration.test_console_auth import browser, sign_in
from tests.integration.test_console_campaigns import _new, _preview, _step

pytestmark = pytest.mark.integration


def test_the_content_step_suggests_the_workspace_profiles_to_preview_with(
    tenant: Tenant, other_tenant: Tenant, members: Members
):
    tag = uuid.uuid4().hex[:6]
    api = tenant.client
    ada = f"ada-{tag}@example.com"
    api.put(
        f"/v1/profiles/email/{ada}",
        json={
            "attributes": {"firstName": "Ada"},
            "identities": [{"namespace": "crm_id", "id": f"C@{tag}"}],
        },
    )
    api.put(f"/v1/profiles/email/grace-{tag}@example.com", json={"attributes": {"firstName": "G"}})
    stranger = f"stranger-{tag}@example.com"
    other_tenant.client.put(f"/v1/profiles/email/{stranger}", json={})

    client = browser(tenant)
    token = sign_in(client, members.editor)
    configuration = create_configuration(api, category="transactional")
    campaign_id = _new(client, token)
    _step(
        client, token, campaign_id, 2, channel="email", channel_configuration_id=configuration["id"]
    )
    _step(client, token, campaign_id, 3, subject="Hi {{ profile.firstName }}", html="<p>x</p>")

    page = client.get(f"/campaigns/{campaign_id}/steps/3").text
    field = re.search(r'<input id="preview-identity"[^>]*>', page)
    assert field and 'list="preview-identity-options"' in field.group(0)
    assert 'aria-describedby="preview-identity-hint"' in field.group(0)
    assert '<label for="preview-identity">' in page
    options = re.search(r'<datalist id="preview-identity-options">(.*?)</datalist>', page, re.S)
    assert options
    offered = {unescape(value) for value in re.findall(r'value="([^"]*)"', options.group(1))}
    assert {ada, f"grace-{tag}@example.com", f"crm_id:C@{tag}"} <= offered
    assert stranger not in offered

    # Narrowed as one types; found by its CRM id, Ada's profile offers her address too.
    narrowed = client.get("/profiles/suggestions", params={"q": f"C@{tag}"})
    assert narrowed.status_code == 200
    items = narrowed.json()["items"]
    assert {(i["namespace"], i["id"]) for i in items} == {("email", ada), ("crm_id", f"C@{tag}")}
    assert client.get("/profiles/suggestions", params={"q": stranger}).json()["items"] == []
    assert client.get("/profiles/suggestions", params={"q": "ADA-" + tag}).json()["items"]

    # What the picker sends: the suggestion's namespace and id, exactly.
    picked = next(i for i in items if i["namespace"] == "crm_id")
    answer = _preview(
        client, token, campaign_id, identity={"namespace": picked["namespace"], "id": picked["id"]}
    )
    assert answer["content"]["subject"] == "Hi Ada", answer

    anonymous = browser(tenant)
    refused = anonymous.get("/profiles/suggestions", params={"q": "a"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/sign-in")
