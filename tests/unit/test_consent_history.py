"""Which consent writes become history rows: a channel whose status changed, and only that."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.profiles.consent_history import changes, status_of

NOW = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def entry(status: str, stamp: str = "2026-01-01T00:00:00+00:00") -> dict[str, str]:
    return {"status": status, "updated_at": stamp, "source": "api"}


def test_a_channel_never_set_is_unset():
    assert status_of({}, "email") == "unset"
    assert status_of({"email": "garbage"}, "email") == "unset"
    assert status_of({"email": entry("out")}, "email") == "out"


def test_only_channels_whose_status_changed_make_rows():
    before = {"email": entry("in"), "sms": entry("out")}
    after = {
        "email": entry("in", NOW.isoformat()),  # re-stamped, same status
        "sms": entry("in"),
        "push": entry("unset"),  # unset was the status already
    }
    rows = changes("w", "p", before, after, "import", NOW, "message:m")
    assert [(r["channel"], r["previous_status"], r["status"]) for r in rows] == [
        ("sms", "out", "in")
    ]
    assert (rows[0]["source"], rows[0]["detail"], rows[0]["occurred_at"]) == (
        "import",
        "message:m",
        NOW,
    )
    assert changes("w", "p", after, after, "api", NOW) == []


def test_every_row_has_the_same_columns_and_a_bounded_source_and_detail():
    rows = changes("w", "p", {}, {"email": entry("in"), "sms": entry("out")}, "x" * 99, NOW)
    assert [r["previous_status"] for r in rows] == ["unset", "unset"]
    assert len({tuple(r) for r in rows}) == 1
    assert {len(r["source"]) for r in rows} == {64}
    assert rows[0]["detail"] is None and rows[0]["id"] != rows[1]["id"]
