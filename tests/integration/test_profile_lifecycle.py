"""Profile lifecycle: push tokens per app, merges, erasure (the right to be forgotten)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration
from tests.integration.test_audience_executions import audience, execution_row, fan_out
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, permanent
from tests.integration.test_executions import live_campaign, recipient
from tests.integration.test_trigger_store import StoreFactory, stores
from tidings.clock import utcnow
from tidings.executions import service as executions
from tidings.executions.models import messages
from tidings.executions.schemas import ExecutionCreate
from tidings.executions.service import Triggered
from tidings.profiles.models import profile_erasures, profile_merges
from tidings.suppressions import service as suppressions
from tidings.suppressions.models import suppression_soft_bounces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

APP = "com.example.app"
OTHER_APP = "com.example.other"


def put_profile(tenant: Tenant, email: str, **body: Any) -> dict[str, Any]:
    response = tenant.client.put(f"/v1/profiles/email/{email}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def register(
    tenant: Tenant, email: str, token: str, app_id: str = APP, platform: str = "ios"
) -> Any:
    return tenant.client.put(
        f"/v1/profiles/email/{email}/push-tokens",
        json={"app_id": app_id, "platform": platform, "token": token},
    )


def tokens_of(tenant: Tenant, email: str) -> list[tuple[str, str, str]]:
    response = tenant.client.get(f"/v1/profiles/email/{email}/push-tokens")
    assert response.status_code == 200, response.text
    return [(t["app_id"], t["platform"], t["token"]) for t in response.json()["items"]]


def rows_of(tenant: Tenant, execution_id: str) -> list[dict[str, Any]]:
    with tenant.runtime.db.read() as conn:
        query = messages.select().where(messages.c.execution_id == execution_id)
        return [dict(row) for row in conn.execute(query).mappings()]


def trigger(tenant: Tenant, campaign: dict[str, Any], *recipients: Any, **extra: Any) -> str:
    response = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "recipients": list(recipients), **extra},
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def push_campaign(
    tenant: Tenant, category: str = "transactional", **push_settings: Any
) -> dict[str, Any]:
    configuration = create_configuration(
        tenant.client, category=category, channel="push", **push_settings
    )
    return live_campaign(
        tenant,
        category=category,
        channel="push",
        channel_configuration_id=configuration["id"],
        content={"title": "Order {{ context.order.id }}", "body": "Hi {{ profile.firstName }}"},
        audience={"identity_namespace": "email", "create_new_profiles": True},
    )


# ---------------------------------------------------------------- push tokens


def test_a_token_is_registered_once_per_app_and_moves_to_the_newest_profile(tenant: Tenant):
    put_profile(tenant, "ada@example.com")
    put_profile(tenant, "bob@example.com")
    first = register(tenant, "Ada@Example.com", "tok-1")
    assert first.status_code == 201, first.text
    assert first.json()["app_id"] == APP and first.json()["platform"] == "ios"
    # Registered again: seen again, not new; the platform may change.
    again = register(tenant, "ada@example.com", "tok-1", platform="android")
    assert again.status_code == 200
    assert again.json()["created_at"] == first.json()["created_at"]
    assert again.json()["last_seen_at"] >= first.json()["last_seen_at"]
    # The same token for another app is another registration.
    assert register(tenant, "ada@example.com", "tok-1", app_id=OTHER_APP).status_code == 201
    assert register(tenant, "ada@example.com", "tok-2").status_code == 201
    assert tokens_of(tenant, "ada@example.com") == [
        (APP, "ios", "tok-2"),
        (OTHER_APP, "ios", "tok-1"),
        (APP, "android", "tok-1"),
    ]
    # The device changed hands: the token of the app moves to Bob.
    moved = register(tenant, "bob@example.com", "tok-1", platform="android")
    assert moved.status_code == 201
    assert tokens_of(tenant, "bob@example.com") == [(APP, "android", "tok-1")]
    assert (APP, "android", "tok-1") not in tokens_of(tenant, "ada@example.com")


def test_tokens_are_removed_by_query_and_long_tokens_are_kept_whole(tenant: Tenant):
    client = tenant.client
    put_profile(tenant, "ada@example.com")
    # Tokens are opaque: long, with characters a path would need escaped.
    long_token = "web:" + "x/?&=#" * 680
    assert len(long_token) <= 4096
    assert register(tenant, "ada@example.com", long_token, platform="web").status_code == 201
    register(tenant, "ada@example.com", long_token, app_id=OTHER_APP, platform="web")
    register(tenant, "ada@example.com", "tok-2")
    path = "/v1/profiles/email/ada@example.com/push-tokens"
    removed = client.delete(path, params={"token": long_token, "app_id": APP})
    assert removed.status_code == 204, removed.text
    assert tokens_of(tenant, "ada@example.com") == [
        (APP, "ios", "tok-2"),
        (OTHER_APP, "web", long_token),
    ]
    # Without app_id: the token of every app.
    register(tenant, "ada@example.com", "tok-2", app_id=OTHER_APP)
    assert client.delete(path, params={"token": "tok-2"}).status_code == 204
    assert tokens_of(tenant, "ada@example.com") == [(OTHER_APP, "web", long_token)]
    assert client.delete(path, params={"token": "tok-2"}).status_code == 404
    assert client.delete(path).status_code == 422


def test_push_tokens_need_a_known_profile_and_valid_values(tenant: Tenant):
    assert register(tenant, "nobody@example.com", "tok").status_code == 404
    assert tenant.client.get("/v1/profiles/email/nobody@example.com/push-tokens").status_code == 404
    put_profile(tenant, "ada@example.com")
    response = tenant.client.put(
        "/v1/profiles/email/ada@example.com/push-tokens",
        json={"app_id": "has space", "platform": "blackberry", "token": "a\x00b"},
    )
    assert response.status_code == 422
    assert set(problem_fields(response)) == {"app_id", "platform", "token"}
    too_long = register(tenant, "ada@example.com", "t" * 4097)
    assert problem_fields(too_long) == ["token"]
    reader = tenant.client_with(Scope.PROFILES_READ)
    assert reader.get("/v1/profiles/email/ada@example.com/push-tokens").status_code == 200
    denied = reader.put(
        "/v1/profiles/email/ada@example.com/push-tokens",
        json={"app_id": APP, "platform": "ios", "token": "tok"},
    )
    assert denied.status_code == 403


def test_an_upsert_registers_the_push_tokens_of_its_body(tenant: Tenant):
    tokens = [{"app_id": APP, "platform": "android", "token": "from-put"}]
    put_profile(tenant, "ada@example.com", push_tokens=tokens)
    # A later PUT without tokens removes none.
    put_profile(tenant, "ada@example.com", attributes={"firstName": "Ada"})
    assert tokens_of(tenant, "ada@example.com") == [(APP, "android", "from-put")]
    imported = tenant.client.post(
        "/v1/profiles/imports?format=jsonl",
        content=b'{"identities": [{"namespace": "email", "id": "ada@example.com"}], '
        b'"push_tokens": [{"app_id": "a", "platform": "ios", "token": "t"}]}\n',
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["rejected"][0]["reason"].startswith("push_tokens")


def test_push_messages_go_to_the_newest_token_of_the_configurations_app(tenant: Tenant):
    campaign = push_campaign(tenant)
    put_profile(tenant, "ada@example.com", attributes={"firstName": "Ada"})
    register(tenant, "ada@example.com", "ada-old")
    register(tenant, "ada@example.com", "ada-other-app", app_id=OTHER_APP)
    register(tenant, "ada@example.com", "ada-new", platform="android")
    register(tenant, "ada@example.com", "ada-other-app", app_id=OTHER_APP)
    put_profile(tenant, "bob@example.com")
    register(tenant, "bob@example.com", "bob-other-app", app_id=OTHER_APP)
    execution = trigger(
        tenant,
        campaign,
        recipient("ada@example.com"),
        recipient("bob@example.com"),
        recipient("cy@example.com", channel_data={"push_token": "given-in-the-call"}),
        context={"order": {"id": "A-1"}},
    )
    addresses = {row["recipient_id"]: row["address"] for row in rows_of(tenant, execution)}
    assert addresses == {
        "ada@example.com": "ada-new",
        "bob@example.com": None,  # no token for this app: excluded as no_address
        "cy@example.com": "given-in-the-call",
    }
    adapter = RecordingAdapter()
    drain(deliverer_for(tenant.runtime, adapter))
    sent = {m.to: m for m in adapter.sent if m.to in ("ada-new", "given-in-the-call")}
    assert sent["ada-new"].content["title"] == "Order A-1"
    assert sent["ada-new"].content["body"] == "Hi Ada"
    states = {
        row["recipient_id"]: (row["state"], row["reason"]) for row in rows_of(tenant, execution)
    }
    assert states["bob@example.com"] == ("excluded", "no_address")


def test_both_trigger_stores_address_push_messages_alike(tenant: Tenant):
    for store_of in stores(tenant):
        check_push_addresses(tenant, store_of)


def check_push_addresses(tenant: Tenant, store_of: StoreFactory) -> None:
    scoped = push_campaign(tenant)
    # A configuration that names no app: the newest token of any app.
    any_app = push_campaign(tenant, app_id=None)
    email = f"{store_of.__name__}@example.com"
    put_profile(tenant, email)
    long_token = "t" * 4096
    register(tenant, email, long_token)
    register(tenant, email, "newest-other-app", app_id=OTHER_APP)

    def job(campaign: dict[str, Any]) -> executions.TriggerJob:
        body = ExecutionCreate.model_validate(
            {"campaign_id": campaign["id"], "recipients": [recipient(email)]}
        )
        return executions.prepare(tenant.workspace_id, body, utcnow())

    with store_of(tenant) as store:
        outcomes = executions.accept_batch(store, [job(scoped), job(any_app)])
    assert all(isinstance(outcome, Triggered) for outcome in outcomes)
    addresses = [
        rows_of(tenant, outcome.response["execution_id"])[0]["address"]
        for outcome in outcomes
        if isinstance(outcome, Triggered)
    ]
    assert addresses == [long_token, "newest-other-app"]


def test_an_audience_execution_sends_push_to_the_members_tokens(tenant: Tenant):
    put_profile(tenant, "ada@example.com")
    put_profile(tenant, "bob@example.com")
    register(tenant, "ada@example.com", "ada-token")
    register(tenant, "bob@example.com", "bob-other-app", app_id=OTHER_APP)
    audience_id = audience(tenant, ("email", "ada@example.com"), ("email", "bob@example.com"))
    configuration = create_configuration(tenant.client, category="marketing", channel="push")
    campaign = live_campaign(
        tenant,
        category="marketing",
        channel="push",
        channel_configuration_id=configuration["id"],
        content={"title": "Sale", "body": "Now on"},
        audience={"identity_namespace": "email", "audience_id": audience_id},
    )
    response = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"]})
    assert response.status_code == 202, response.text
    execution = response.json()["execution_id"]
    fan_out(tenant, execution)
    assert execution_row(tenant, execution)["status"] == "accepted"
    addresses = {row["recipient_id"]: row["address"] for row in rows_of(tenant, execution)}
    assert addresses == {"ada@example.com": "ada-token", "bob@example.com": None}


# ---------------------------------------------------------------- merge


def merge(tenant: Tenant, into: tuple[str, str], source: tuple[str, str]) -> Any:
    return tenant.client.post(
        "/v1/profiles/merge",
        json={
            "into": {"namespace": into[0], "id": into[1]},
            "from": {"namespace": source[0], "id": source[1]},
        },
    )


def set_consent(tenant: Tenant, who: str, **consent: str) -> None:
    response = tenant.client.patch(f"/v1/profiles/email/{who}", json={"consent": consent})
    assert response.status_code == 200, response.text


def test_a_merge_moves_everything_to_the_target_and_deletes_the_source(tenant: Tenant):
    target = put_profile(
        tenant,
        "ada@example.com",
        identities=[{"namespace": "crmId", "id": "C-1"}],
        attributes={"firstName": "Ada", "nickname": None, "address": {"city": "London"}},
        timezone="Europe/London",
    )
    source = put_profile(
        tenant,
        "anon-1@example.com",
        identities=[{"namespace": "deviceId", "id": "D-1"}],
        attributes={
            "firstName": "Anonymous",
            "nickname": "Ace",
            "address": {"city": "Paris", "zip": "75001"},
            "lastSeen": "web",
        },
        locale="fr-FR",
    )
    # Consent: the most recent change per channel wins, whichever profile has it.
    set_consent(tenant, "anon-1@example.com", email="out")
    set_consent(tenant, "ada@example.com", email="in")
    set_consent(tenant, "ada@example.com", sms="in")
    set_consent(tenant, "anon-1@example.com", sms="out", push="in")
    register(tenant, "anon-1@example.com", "anon-token")
    both = audience(tenant, ("email", "ada@example.com"), ("email", "anon-1@example.com"))
    only_source = audience(tenant, ("email", "anon-1@example.com"))
    # A message waiting for later is re-pointed; one already created for now keeps its history.
    campaign = live_campaign(tenant)
    later = trigger(
        tenant,
        campaign,
        recipient("anon-1@example.com"),
        execute_at=(utcnow() + timedelta(days=1)).isoformat(),
    )

    merged = merge(tenant, ("email", "ada@example.com"), ("deviceId", "D-1"))
    assert merged.status_code == 200, merged.text
    profile = merged.json()
    assert profile["id"] == target["id"]
    assert {(i["namespace"], i["id"]) for i in profile["identities"]} == {
        ("email", "ada@example.com"),
        ("crmId", "C-1"),
        ("email", "anon-1@example.com"),
        ("deviceId", "D-1"),
    }
    assert profile["attributes"] == {
        "firstName": "Ada",
        "nickname": "Ace",
        "address": {"city": "London", "zip": "75001"},
        "lastSeen": "web",
    }
    consent = {channel: entry["status"] for channel, entry in profile["consent"].items()}
    assert consent == {"email": "in", "sms": "out", "push": "in"}
    assert (profile["timezone"], profile["locale"]) == ("Europe/London", "fr-FR")
    # The source's identities now find the target.
    assert tenant.client.get("/v1/profiles/deviceId/D-1").json()["id"] == target["id"]
    assert tokens_of(tenant, "ada@example.com") == [(APP, "ios", "anon-token")]
    for audience_id in (both, only_source):
        members = tenant.client.get(f"/v1/audiences/{audience_id}").json()
        assert members["member_count"] == 1, members
    (queued,) = rows_of(tenant, later)
    assert (queued["profile_id"], queued["state"]) == (target["id"], "queued")
    with tenant.runtime.db.read() as conn:
        recorded = (
            conn.execute(
                sa.select(profile_merges).where(
                    profile_merges.c.workspace_id == tenant.workspace_id
                )
            )
            .mappings()
            .all()
        )
    assert [(r["from_profile_id"], r["into_profile_id"]) for r in recorded] == [
        (source["id"], target["id"])
    ]


def test_a_merge_needs_two_profiles_of_the_workspace(tenant: Tenant, other_tenant: Tenant):
    put_profile(tenant, "ada@example.com", identities=[{"namespace": "crmId", "id": "C-1"}])
    put_profile(other_tenant, "bob@example.com")
    unknown = merge(tenant, ("email", "ada@example.com"), ("email", "nobody@example.com"))
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert merge(tenant, ("email", "nobody@example.com"), ("crmId", "C-1")).status_code == 404
    same = merge(tenant, ("email", "ada@example.com"), ("crmId", "C-1"))
    assert same.status_code == 422
    assert problem_fields(same) == ["from"]
    invalid = merge(tenant, ("email", "not-an-email"), ("phone", "12"))
    assert problem_fields(invalid) == ["into.id", "from.id"]
    # Another workspace's profiles are unknown here, both ways.
    assert (
        merge(tenant, ("email", "ada@example.com"), ("email", "bob@example.com")).status_code == 404
    )
    assert (
        merge(other_tenant, ("email", "bob@example.com"), ("email", "ada@example.com")).status_code
        == 404
    )
    assert tenant.client.get("/v1/profiles/email/ada@example.com").status_code == 200
    assert other_tenant.client.get("/v1/profiles/email/bob@example.com").status_code == 200
    reader = tenant.client_with(Scope.PROFILES_READ)
    denied = reader.post(
        "/v1/profiles/merge",
        json={
            "into": {"namespace": "email", "id": "ada@example.com"},
            "from": {"namespace": "crmId", "id": "C-1"},
        },
    )
    assert denied.status_code == 403


# ---------------------------------------------------------------- erasure


def test_erasure_forgets_the_person_and_keeps_anonymous_counts(
    tenant: Tenant, other_tenant: Tenant
):
    put_profile(
        tenant,
        "ada@example.com",
        identities=[{"namespace": "crmId", "id": "C-1"}],
        attributes={"firstName": "Ada"},
    )
    register(tenant, "ada@example.com", "ada-token")
    audience_id = audience(tenant, ("email", "ada@example.com"))
    # A profile merged into Ada earlier: its history is Ada's too.
    put_profile(tenant, "old-ada@example.com")
    campaign = live_campaign(tenant)
    adapter = RecordingAdapter()
    adapter.fail("old-ada@example.com", permanent())
    sent = trigger(
        tenant,
        campaign,
        recipient("ada@example.com", profile={"firstName": "Ada"}, context={"secret": "s"}),
        recipient("old-ada@example.com"),
        recipient("bob@example.com"),
        context={"order": {"id": "A-1"}},
    )
    # Sent to her address without a profile (an external recipient): hers as well.
    external = trigger(tenant, campaign, recipient("ada@example.com", external=True))
    drain(deliverer_for(tenant.runtime, adapter))
    assert (
        merge(tenant, ("email", "ada@example.com"), ("email", "old-ada@example.com")).status_code
        == 200
    )
    later = trigger(
        tenant,
        campaign,
        recipient("ada@example.com"),
        recipient("bob@example.com"),
        execute_at=(utcnow() + timedelta(days=1)).isoformat(),
    )
    counts_before = tenant.client.get(f"/v1/executions/{sent}").json()["counts"]
    # Another workspace cannot erase her.
    assert other_tenant.client.delete("/v1/profiles/email/ada@example.com").status_code == 404

    assert tenant.client.delete("/v1/profiles/crmId/C-1").status_code == 204

    for identity in ("email/ada@example.com", "crmId/C-1", "email/old-ada@example.com"):
        assert tenant.client.get(f"/v1/profiles/{identity}").status_code == 404
    assert tenant.client.get(f"/v1/audiences/{audience_id}").json()["member_count"] == 0
    assert tenant.client.get(f"/v1/executions/{sent}").json()["counts"] == counts_before
    erased_sent = [row for row in rows_of(tenant, sent) if row["recipient_id"] == "erased"]
    # Ada's own message and the one of the profile merged into hers, which had failed.
    assert sorted(row["state"] for row in erased_sent) == ["failed", "sent"]
    assert {row["reason"] for row in erased_sent} == {None, "smtp_550"}
    for row in erased_sent:
        assert (row["address"], row["profile_id"], row["profile_data"]) == (None, None, None)
        assert (row["context"], row["last_error"]) == ({}, None)
    assert [(r["recipient_id"], r["address"]) for r in rows_of(tenant, external)] == [
        ("erased", None)
    ]
    by_recipient = {row["recipient_id"]: row for row in rows_of(tenant, later)}
    assert (by_recipient["erased"]["state"], by_recipient["erased"]["reason"]) == (
        "cancelled",
        "profile_erased",
    )
    assert by_recipient["bob@example.com"]["state"] == "queued"
    assert tenant.client.get("/v1/profiles/email/bob@example.com").status_code == 200
    with tenant.runtime.db.read() as conn:
        erasures = (
            conn.execute(
                sa.select(profile_erasures).where(
                    profile_erasures.c.workspace_id == tenant.workspace_id
                )
            )
            .mappings()
            .all()
        )
        merges_left = conn.execute(
            sa.select(sa.func.count())
            .select_from(profile_merges)
            .where(profile_merges.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
    assert [row["message_count"] for row in erasures] == [4]
    assert merges_left == 0
    # The identities are free again, and a second erasure finds nothing.
    assert tenant.client.delete("/v1/profiles/crmId/C-1").status_code == 404
    assert tenant.client.put("/v1/profiles/email/ada@example.com", json={}).status_code == 201
    assert tokens_of(tenant, "ada@example.com") == []


def soft_bounces_of(tenant: Tenant) -> set[tuple[str, str, int]]:
    with tenant.runtime.db.read() as conn:
        rows = conn.execute(
            sa.select(
                suppression_soft_bounces.c.channel,
                suppression_soft_bounces.c.value,
                suppression_soft_bounces.c.count,
            ).where(suppression_soft_bounces.c.workspace_id == tenant.workspace_id)
        )
        return {(row.channel, row.value, row.count) for row in rows}


def test_erasure_forgets_the_soft_bounces_of_the_persons_addresses(
    tenant: Tenant, other_tenant: Tenant
):
    put_profile(
        tenant,
        "ada@example.com",
        identities=[
            {"namespace": "phone", "id": "+14155550101"},
            # An address kept in another namespace is hers all the same.
            {"namespace": "crmId", "id": "Ada.Work@Example.com"},
        ],
    )
    put_profile(tenant, "old-ada@example.com")
    assert (
        merge(tenant, ("email", "ada@example.com"), ("email", "old-ada@example.com")).status_code
        == 200
    )
    now = utcnow()
    with tenant.runtime.db.write() as conn:
        for workspace_id, channel, address in [
            (tenant.workspace_id, "email", "ADA@example.com"),
            (tenant.workspace_id, "email", "old-ada@example.com"),
            (tenant.workspace_id, "email", "ada.work@example.com"),
            (tenant.workspace_id, "sms", "+1 415 555 0101"),
            (tenant.workspace_id, "email", "bob@example.com"),
            (other_tenant.workspace_id, "email", "ada@example.com"),
        ]:
            suppressions.record_soft_bounce(
                conn, workspace_id, address, "test", now, channel=channel, threshold=3
            )
    added = tenant.client.post(
        "/v1/suppressions",
        json={"channel": "email", "value": "ada@example.com", "type": "manual"},
    )
    assert added.status_code in (200, 201), added.text
    assert len(soft_bounces_of(tenant)) == 5

    assert tenant.client.delete("/v1/profiles/email/ada@example.com").status_code == 204

    assert soft_bounces_of(tenant) == {("email", "bob@example.com", 1)}
    assert soft_bounces_of(other_tenant) == {("email", "ada@example.com", 1)}
    # The suppression list is kept: it protects the address from being mailed again.
    listed = tenant.client.get("/v1/suppressions").json()["items"]
    assert [entry["value"] for entry in listed] == ["ada@example.com"]


def test_a_merge_re_points_messages_in_flight_and_keeps_the_history(tenant: Tenant):
    target = put_profile(tenant, "ada@example.com", attributes={"firstName": "Ada"})
    source = put_profile(tenant, "ada.work@example.com")
    campaign = live_campaign(tenant)
    # Not due for a day: no worker of another test claims them meanwhile.
    later = (utcnow() + timedelta(days=1)).isoformat()
    in_flight, sent, queued = (
        rows_of(
            tenant, trigger(tenant, campaign, recipient("ada.work@example.com"), execute_at=later)
        )[0]
        for _ in range(3)
    )
    assert {row["profile_id"] for row in (in_flight, sent, queued)} == {source["id"]}
    with tenant.runtime.db.write() as conn:
        # As a claim leaves it: `sending` under a lease, to go back to `queued` on a retry.
        conn.execute(
            messages.update()
            .where(messages.c.id == in_flight["id"])
            .values(state="sending", lease_until=utcnow() + timedelta(minutes=5))
        )
        conn.execute(
            messages.update()
            .where(messages.c.id == sent["id"])
            .values(state="sent", sent_at=utcnow())
        )

    merged = merge(tenant, ("email", "ada@example.com"), ("email", "ada.work@example.com"))
    assert merged.status_code == 200, merged.text

    after = {
        row["id"]: row
        for message in (in_flight, sent, queued)
        for row in rows_of(tenant, message["execution_id"])
    }
    assert (after[in_flight["id"]]["state"], after[in_flight["id"]]["profile_id"]) == (
        "sending",
        target["id"],
    )
    assert after[queued["id"]]["profile_id"] == target["id"]
    # History keeps the source's id (an erasure follows profile_merges to it).
    assert after[sent["id"]]["profile_id"] == source["id"]
