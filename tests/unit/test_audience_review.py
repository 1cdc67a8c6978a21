"""Review of the audience step without a database: the audience lookup, high throughput."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.campaigns.review import review_version
from tidings.content.engine import TemplateEngine
from tidings.vocabulary import Category, Channel

ENGINE = TemplateEngine(fuel=50_000, max_source_bytes=100_000)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def review(category, audience, content=None, audience_exists=None):
    return review_version(
        engine=ENGINE,
        category=category,
        channel=Channel.EMAIL,
        version={
            "channel_configuration_id": "cfg",
            "content": content or {"subject": "Hi", "html": "{{ unsubscribe_url }}"},
            "audience": {"identity_namespace": "email", **audience},
            "start_at": None,
            "end_at": None,
        },
        configuration={
            "channel": "email",
            "category": category.value,
            "settings": {"smtp_url": "smtp://relay"},
        },
        known_profile_paths=lambda paths: set(),
        now=NOW,
        audience_exists=audience_exists,
    )


def test_the_audience_is_looked_up_for_marketing_campaigns_only():
    asked: list[str] = []

    def exists(audience_id: str) -> bool:
        asked.append(audience_id)
        return audience_id == "known"

    assert review(Category.MARKETING, {"audience_id": "known"}, audience_exists=exists).ready
    missing = review(Category.MARKETING, {"audience_id": "gone"}, audience_exists=exists)
    assert [(e.field, e.message) for e in missing.errors] == [
        ("audience.audience_id", "no such audience in this workspace")
    ]
    transactional = review(Category.TRANSACTIONAL, {"audience_id": "gone"}, audience_exists=exists)
    assert transactional.ready
    assert asked == ["known", "gone"]
    # Without a lookup (callers that have no database), the id is not checked.
    assert review(Category.MARKETING, {"audience_id": "gone"}).ready


def test_high_throughput_errors_name_every_profile_variable_and_field():
    content = {
        "subject": "{{ profile.firstName }} {{ context.order.id }}",
        "html": "{{ profile.a }}{{ profile.b.c }}",
        "text": "{{ context.x }}",
    }
    result = review(Category.TRANSACTIONAL, {"high_throughput": True}, content)
    assert sorted((e.field, e.message.split()[0]) for e in result.errors) == [
        ("content.html", "profile.a"),
        ("content.html", "profile.b.c"),
        ("content.subject", "profile.firstName"),
    ]
    assert result.warnings == []
    assert result.profile_paths == ["a", "b.c", "firstName"]
    # The same content is fine without high throughput (warnings only).
    assert review(Category.TRANSACTIONAL, {"high_throughput": False}, content).ready


def test_a_syntax_error_is_reported_once_under_high_throughput():
    content = {"subject": "{{ profile.x ", "html": "<p>{{ context.y }}</p>"}
    result = review(Category.TRANSACTIONAL, {"high_throughput": True}, content)
    assert [e.field for e in result.errors] == ["content.subject"]
    assert result.errors[0].message.startswith("template error")


def test_high_throughput_on_a_marketing_campaign_is_an_error():
    result = review(Category.MARKETING, {"audience_id": "a", "high_throughput": True})
    assert [e.field for e in result.errors] == ["audience.high_throughput"]
