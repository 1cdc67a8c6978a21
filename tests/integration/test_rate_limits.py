"""Per-key request rates: 429 with Retry-After past the limit, on every route."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant
from tests.integration.test_ajo_api import ajo_headers, unitary_body
from tests.integration.test_executions import live_campaign, recipient
from tidings.errors import RateLimited
from tidings.workspaces.limits import KeyRateLimiter

pytestmark = pytest.mark.integration


def test_a_key_over_its_rate_gets_429_with_retry_after(tenant: Tenant):
    campaign = live_campaign(tenant)
    limiter = tenant.runtime.key_limiter
    tenant.runtime.key_limiter = KeyRateLimiter(rate=0.5, burst=2)
    try:
        assert tenant.client.get("/v1/workspace").status_code == 200
        assert tenant.client.get("/v1/campaigns").status_code == 200
        refused = tenant.client.post(
            "/v1/executions",
            json={"campaign_id": campaign["id"], "recipients": [recipient("r@example.com")]},
        )
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["Retry-After"] in ("1", "2")
        ajo = tenant.client.post(
            "/ajo/im/executions/unitary",
            json=unitary_body(campaign["id"]),
            headers=ajo_headers(tenant),
        )
        assert ajo.status_code == 429
        assert ajo.headers["Retry-After"] in ("1", "2")
    finally:
        tenant.runtime.key_limiter = limiter


@pytest.mark.parametrize(
    ("elapsed", "allowed"),
    [(0.0, False), (0.5, False), (1.0, True)],
)
def test_the_bucket_refills_at_the_rate(elapsed: float, allowed: bool):
    limiter = KeyRateLimiter(rate=1, burst=1)
    limiter.take("k", now=100.0)
    if allowed:
        limiter.take("k", now=100.0 + elapsed)
    else:
        with pytest.raises(RateLimited) as refused:
            limiter.take("k", now=100.0 + elapsed)
        assert refused.value.retry_after == pytest.approx(1.0 - elapsed)
    # Another key has its own allowance.
    limiter.take("other", now=100.0)


def test_no_limit_by_default(tenant: Tenant):
    assert tenant.runtime.settings.api_rate_limit == 0
    for _ in range(50):
        assert tenant.client.get("/v1/workspace").status_code == 200
