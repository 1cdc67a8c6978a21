"""The rules a merge of two profiles follows for attributes and consent."""

from __future__ import annotations

from tidings.profiles.service import merged_attributes, merged_consent


def test_the_target_wins_attribute_conflicts_and_objects_merge_deeply():
    target = {"name": "Ada", "tags": ["a"], "address": {"city": "London", "geo": {"lat": 1}}}
    source = {
        "name": "Anon",
        "tags": ["b"],
        "address": {"city": "Paris", "zip": "75001", "geo": {"lon": 2}},
        "plan": "free",
    }
    assert merged_attributes(target, source) == {
        "name": "Ada",
        "tags": ["a"],
        "address": {"city": "London", "zip": "75001", "geo": {"lat": 1, "lon": 2}},
        "plan": "free",
    }


def test_a_null_or_missing_target_value_is_filled_and_a_scalar_beats_an_object():
    assert merged_attributes({"a": None, "b": 1}, {"a": 2, "b": {"x": 1}, "c": None}) == {
        "a": 2,
        "b": 1,
        "c": None,
    }


def test_consent_takes_the_most_recent_change_per_channel():
    def entry(status: str, at: str | None) -> dict[str, str | None]:
        return {"status": status, "updated_at": at, "source": "api"}

    target = {
        "email": entry("in", "2026-01-02T00:00:00+00:00"),
        "sms": entry("in", "2026-01-01T00:00:00+00:00"),
        "push": entry("out", "2026-01-01T00:00:00+00:00"),
    }
    source = {
        "email": entry("out", "2026-01-01T00:00:00+00:00"),
        "sms": entry("out", "2026-01-03T00:00:00+00:00"),
        "push": entry("in", "2026-01-01T00:00:00+00:00"),  # a tie: the target's stays
    }
    merged = merged_consent(target, source)
    assert {channel: value["status"] for channel, value in merged.items()} == {
        "email": "in",
        "sms": "out",
        "push": "out",
    }
    assert merged_consent({}, {"sms": entry("in", None)}) == {"sms": entry("in", None)}
