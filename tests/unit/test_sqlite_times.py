"""The SQLite shortcut for UTCDateTime stores exactly the text of the type's own processors."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from tidings.db.types import UTCDateTime, bind_processor, sqlite_utc_text

SQLITE = sqlite.dialect()
# The type's own chain: UTCDateTime's process_bind_param, then the dialect's DATETIME text.
OWN = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)

ZONES = st.sampled_from(
    [
        dt.UTC,
        dt.timezone(dt.timedelta(hours=2)),
        dt.timezone(dt.timedelta(hours=-9, minutes=-30)),
        dt.timezone(dt.timedelta(hours=14)),
    ]
)


@given(
    st.datetimes(
        min_value=dt.datetime(2, 1, 1),
        max_value=dt.datetime(9998, 12, 31),
        timezones=ZONES,
    )
)
def test_the_same_text_as_the_types_own_processors(value: dt.datetime):
    assert OWN is not None
    assert sqlite_utc_text(value) == OWN(value)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC),  # no microseconds: still written
        dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),  # a year of three digits
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ],
)
def test_edges(value: dt.datetime):
    assert sqlite_utc_text(value) == OWN(value)  # type: ignore[misc]


def test_none_and_naive_times_as_the_type_does():
    assert sqlite_utc_text(None) is None
    with pytest.raises(ValueError, match="naive"):
        sqlite_utc_text(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        OWN(dt.datetime(2026, 1, 1))  # type: ignore[misc]


def test_the_shortcut_is_for_utc_times_on_sqlite_only():
    assert bind_processor(UTCDateTime(), SQLITE) is sqlite_utc_text
    assert bind_processor(UTCDateTime(), postgresql.dialect()) is not sqlite_utc_text
    assert bind_processor(sa.String(), SQLITE) is None
