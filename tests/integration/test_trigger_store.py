"""Both implementations of the trigger batch's store give the same answers and rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import Tenant
from tests.integration.test_executions import live_campaign, recipient
from tidings.clock import utcnow
from tidings.errors import InvalidInput
from tidings.executions import service
from tidings.executions.models import executions, messages
from tidings.executions.schemas import ExecutionCreate
from tidings.executions.service import Triggered
from tidings.executions.store import SqlAlchemyStore, SqliteStore, TriggerStore

pytestmark = pytest.mark.integration

StoreFactory = Callable[[Tenant], Any]


@contextmanager
def sqlalchemy_store(tenant: Tenant) -> Iterator[TriggerStore]:
    with tenant.runtime.db.write() as conn:
        yield SqlAlchemyStore(conn)


@contextmanager
def sqlite_store(tenant: Tenant) -> Iterator[TriggerStore]:
    db = tenant.runtime.db
    with db.sqlite_write_at_once() as connection:
        assert connection is not None, "the database should be free"
        yield SqliteStore(connection, db.engine.dialect)


def stores(tenant: Tenant) -> list[StoreFactory]:
    """Every store this backend has: the bare sqlite3 one exists for SQLite only."""
    return [sqlalchemy_store, sqlite_store] if tenant.runtime.db.is_sqlite else [sqlalchemy_store]


def job(tenant: Tenant, campaign_id: str, *addresses: str, **extra: Any) -> service.TriggerJob:
    body = ExecutionCreate.model_validate(
        {
            "campaign_id": campaign_id,
            "context": {"order": {"id": "S-1"}},
            "recipients": [recipient(address) for address in addresses],
            **extra,
        }
    )
    return service.prepare(tenant.workspace_id, body, utcnow())


def test_a_batch_answers_each_request_on_its_own(tenant: Tenant):
    for store_of in stores(tenant):
        check_a_batch(tenant, store_of)


def check_a_batch(tenant: Tenant, store_of: StoreFactory) -> None:
    # Each store gets its own campaign and idempotency key.
    campaign = live_campaign(tenant)
    key = f"k-{store_of.__name__}"
    tenant.client.put("/v1/profiles/email/known@example.com", json={"attributes": {}})
    jobs = [
        job(tenant, campaign["id"], "known@example.com", "new@example.com", request_id=key),
        job(tenant, "no-such-campaign", "x@example.com"),
        # Two requests of one batch naming the same new identity share its profile.
        job(tenant, campaign["id"], "new@example.com"),
    ]
    with store_of(tenant) as store:
        outcomes = service.accept_batch(store, jobs)
    assert isinstance(outcomes[0], Triggered) and outcomes[0].response["accepted"] == 2
    assert isinstance(outcomes[1], InvalidInput)
    assert isinstance(outcomes[2], Triggered)
    with tenant.runtime.db.read() as conn:
        rows = (
            conn.execute(
                messages.select().where(
                    messages.c.execution_id.in_(
                        [outcomes[0].response["execution_id"], outcomes[2].response["execution_id"]]
                    )
                )
            )
            .mappings()
            .all()
        )
        stored = (
            conn.execute(
                executions.select().where(executions.c.id == outcomes[0].response["execution_id"])
            )
            .mappings()
            .one()
        )
    assert stored["request_id"] == key and stored["recipient_count"] == 2
    assert stored["created_at"].tzinfo is not None
    by_address = {}
    for row in rows:
        by_address.setdefault(row["recipient_id"], set()).add(row["profile_id"])
    assert len(by_address["new@example.com"]) == 1
    assert {row["address"] for row in rows} == {"known@example.com", "new@example.com"}
    assert all(row["context"] == {"order": {"id": "S-1"}} for row in rows)

    # The stored answer comes back for the same key and body, and not for another body.
    replay = [
        job(tenant, campaign["id"], "known@example.com", "new@example.com", request_id=key),
        job(tenant, campaign["id"], "other@example.com", request_id=key),
    ]
    with store_of(tenant) as store:
        again, conflict = service.accept_batch(store, replay)
    assert isinstance(again, Triggered) and again.replayed
    assert again.response == outcomes[0].response
    assert isinstance(conflict, InvalidInput)
