"""Content review rules, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tidings.campaigns.review import review_version
from tidings.content.engine import TemplateEngine
from tidings.content.schemas import EmailContent, PushContent, SmsContent, parse_content
from tidings.content.service import check_content, render_content, template_sources
from tidings.errors import InvalidInput
from tidings.vocabulary import Category, Channel

ENGINE = TemplateEngine(fuel=50_000, max_source_bytes=100_000)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def version(**overrides):
    base = {
        "channel_configuration_id": "cfg",
        "content": {"subject": "Hi", "html": "{{ unsubscribe_url }}"},
        "audience": {"identity_namespace": "email", "audience_id": "aud"},
        "start_at": None,
        "end_at": None,
    }
    base.update(overrides)
    return base


CONFIG = {"channel": "email", "category": "marketing", "settings": {"smtp_url": "smtp://relay"}}


def review(version_data, configuration=CONFIG, category=Category.MARKETING, known=frozenset()):
    return review_version(
        engine=ENGINE,
        category=category,
        channel=Channel.EMAIL,
        version=version_data,
        configuration=configuration,
        known_profile_paths=lambda paths: set(paths) & set(known),
        now=NOW,
    )


def test_a_complete_version_is_ready():
    result = review(version())
    assert result.ready, result.errors
    assert result.warnings == []


@pytest.mark.parametrize(
    ("changes", "configuration", "field"),
    [
        ({"channel_configuration_id": None}, CONFIG, "channel_configuration_id"),
        ({}, None, "channel_configuration_id"),
        ({}, {**CONFIG, "channel": "sms"}, "channel_configuration_id"),
        ({}, {**CONFIG, "category": "transactional"}, "channel_configuration_id"),
        ({"content": None}, CONFIG, "content"),
        ({"content": {"subject": "Hi", "html": "<p>x</p>"}}, CONFIG, "content.html"),
        (
            {"content": {"subject": "{% if %}", "html": "{{ unsubscribe_url }}"}},
            CONFIG,
            "content.subject",
        ),
        ({"end_at": NOW - timedelta(seconds=1)}, CONFIG, "schedule.end_at"),
        (
            {"start_at": NOW + timedelta(days=2), "end_at": NOW + timedelta(days=1)},
            CONFIG,
            "schedule.end_at",
        ),
    ],
)
def test_blocking_errors(changes, configuration, field):
    result = review(version(**changes), configuration=configuration)
    assert not result.ready
    assert field in [error.field for error in result.errors]


def test_unsubscribe_link_in_the_text_part_is_enough():
    result = review(
        version(content={"subject": "s", "html": "<p>x</p>", "text": "Stop: {{ unsubscribe_url }}"})
    )
    assert result.ready, result.errors


def test_unknown_profile_attributes_warn_and_known_ones_do_not():
    content = {"subject": "{{ profile.first }} {{ profile.last }}", "html": "{{ unsubscribe_url }}"}
    result = review(version(content=content), known={"first"})
    assert result.ready
    assert [w.message for w in result.warnings] == [
        "profile.last is used, but no profile of this workspace has it"
    ]


def test_email_without_any_smtp_relay_warns():
    without_relay = {**CONFIG, "settings": {}}
    result = review(version(), configuration=without_relay)
    assert result.ready
    assert ["no SMTP relay" in w.message for w in result.warnings] == [True]


def test_marketing_without_audience_warns():
    result = review(version(audience={"identity_namespace": "email"}))
    assert result.ready
    assert [w.field for w in result.warnings] == ["audience.audience_id"]


def test_engine_globals_are_not_unknown_variables():
    html = (
        "{% for i in range(3) %}{{ i }}{% endfor %}{% set ns = namespace(n=1) %}"
        "{{ dict(a=1).a }}{{ unsubscribe_url }}"
    )
    result = check_content(
        ENGINE, Channel.EMAIL, Category.MARKETING, EmailContent(subject="s", html=html)
    )
    assert result.errors == []


def test_a_syntax_error_is_not_also_a_missing_unsubscribe_link():
    html = "<p>{{ profile.first_name </p><p>{{ unsubscribe_url }}</p>"
    result = check_content(
        ENGINE, Channel.EMAIL, Category.MARKETING, EmailContent(subject="s", html=html)
    )
    assert len(result.errors) == 1
    assert result.errors[0].message.startswith("template error")


def test_methods_of_values_are_data_dependent():
    content = EmailContent(subject="{{ profile.name.upper() }}", html="{{ unsubscribe_url }}")
    result = check_content(ENGINE, Channel.EMAIL, Category.MARKETING, content)
    assert result.errors == []
    rendered = render_content(ENGINE, content, {"profile": {"name": "ada"}})
    assert rendered["subject"] == "ADA"


def test_data_dependent_failures_are_warnings_not_errors():
    content = {"subject": "{{ context.a / context.b }}", "html": "{{ unsubscribe_url }}"}
    result = check_content(ENGINE, Channel.EMAIL, Category.MARKETING, EmailContent(**content))
    assert result.errors == []
    assert [w.field for w in result.warnings] == ["content.subject"]


@pytest.mark.parametrize(
    ("channel", "raw", "expected"),
    [
        (Channel.SMS, {"body": "Code {{ context.code }}"}, {"body": "Code 42", "media_urls": None}),
        (
            Channel.SMS,
            {"body": "{{ context.code }}", "media_urls": ["https://cdn.example.com/{{ x }}.png"]},
            {"body": "42", "media_urls": ["https://cdn.example.com/{{ x }}.png"]},
        ),
        (
            Channel.PUSH,
            {"title": "Hi {{ profile.n }}", "body": "b", "data": {"k": "{{ context.code }}"}},
            {
                "title": "Hi Z",
                "body": "b",
                "data": {"k": "42"},
                "deeplink": None,
                "badge": None,
                "sound": None,
            },
        ),
        (
            Channel.PUSH,
            {"title": "{{ profile.n }}", "body": "b", "badge": 0, "sound": "{{ x }}.caf"},
            {
                "title": "Z",
                "body": "b",
                "data": None,
                "deeplink": None,
                "badge": 0,
                "sound": "{{ x }}.caf",
            },
        ),
    ],
)
def test_render_keeps_the_content_shape(channel, raw, expected):
    content = parse_content(channel, raw)
    assert content is not None
    rendered = render_content(ENGINE, content, {"profile": {"n": "Z"}, "context": {"code": 42}})
    assert rendered == expected


def test_content_of_another_channel_is_refused_with_field_names():
    with pytest.raises(InvalidInput) as caught:
        parse_content(Channel.SMS, {"subject": "x"})
    assert [e.field for e in caught.value.errors] == ["content.subject"]


def test_template_sources_name_every_templated_field():
    push = PushContent(title="t", body="b", deeplink="app://x", data={"a": "1"})
    assert set(template_sources(push)) == {"title.txt", "body.txt", "deeplink.txt", "data.a.txt"}
    assert set(template_sources(SmsContent(body="x"))) == {"body.txt"}
