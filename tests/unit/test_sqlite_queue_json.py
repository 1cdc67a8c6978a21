"""The claim's JSON decoding on SQLite gives json.loads' answers, quickly when it can."""

from __future__ import annotations

import json

import pytest

from tidings.delivery.sqlite_queue import _json_value


@pytest.mark.parametrize(
    "text",
    [
        '{"order": {"id": "A-1", "items": [{"qty": 2, "price": 12.5}]}, "flag": true}',
        '{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
        '{"u64": 18446744073709551615, "over": 18446744073709551616}',
        '{"long digits in a string": "1234567890123456789012"}',
        '{"nan": NaN, "inf": Infinity}',
        '{"name": "Zo\\u00eb \\ud83c\\udf89", "raw": "Zoë 🎉"}',
        '{"f": 0.1, "e": 1e300, "small": 5e-324}',
        '{"dup": 1, "dup": 2}',
        "[]",
        "null",
    ],
)
def test_answers_as_json_loads(text: str):
    expected = json.loads(text)
    got = _json_value(text)
    assert repr(got) == repr(expected)


def test_none_stays_none():
    assert _json_value(None) is None
