"""Framing and parsing of import files, without a database."""

from __future__ import annotations

import pytest

from tidings.errors import InvalidInput
from tidings.profiles.imports import (
    CsvRows,
    Framer,
    Record,
    RowProblem,
    format_for,
    parse_header,
)
from tidings.profiles.schemas import ImportFormat

CSV_TEXT = (
    'email,note\r\na@example.com,"two\nlines, and ""quotes"""\r\nb@example.com,'
    'x"y\n\n"c@example.com",last'
)


def frame(text: str, size: int, *, csv_quotes: bool = True, limit: int = 1000) -> list[Record]:
    data = text.encode()
    framer = Framer(limit, csv_quotes=csv_quotes)
    return list(framer.records(data[i : i + size] for i in range(0, len(data), size)))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 10_000])
def test_records_are_the_same_however_the_stream_is_cut(size: int):
    records = frame(CSV_TEXT, size)
    assert [(r.line, r.data) for r in records] == [
        (1, b"email,note\r\n"),
        (2, b'a@example.com,"two\nlines, and ""quotes"""\r\n'),
        (4, b'b@example.com,x"y\n'),  # a quote inside a field opens nothing
        (5, b"\n"),
        (6, b'"c@example.com",last'),
    ]


def test_an_oversized_record_is_dropped_and_the_next_one_kept():
    text = "a\n" + "b" * 50 + "\nc\n"
    records = frame(text, 7, csv_quotes=False, limit=20)
    assert [(r.line, r.data, r.problem) for r in records] == [
        (1, b"a\n", None),
        (2, None, "is larger than 20 bytes"),
        (3, b"c\n", None),
    ]


def test_a_quote_left_open_ends_the_file_as_one_rejected_record():
    records = frame('email\n"a@example.com\nb@example.com\n', 4)
    assert records[-1].line == 2
    assert records[-1].problem == "opens a quoted field that the file never closes"


def test_str_chunks_are_read_like_bytes():
    framer = Framer(csv_quotes=True)
    assert [r.data for r in framer.records(["é,", "x\n", "y"])] == ["é,x\n".encode(), b"y"]
    assert framer.lines == 2


def test_csv_cells_build_nested_attributes_and_skip_empty_ones():
    rows = CsvRows()
    assert rows.parse(Record(1, "\ufeffemail,a.b.c,a.d,consent:sms,Locale\n".encode())) is None
    row = rows.parse(Record(2, b"X@Example.com,1,,OUT,fr-FR\n"))
    assert row is not None
    assert row.identities == {("email", "x@example.com")}
    assert row.body.attributes == {"a": {"b": {"c": "1"}}}
    assert row.body.consent == {"sms": "out"}
    assert row.body.locale == "fr-FR"
    assert row.body.model_fields_set == {"attributes", "consent", "locale"}
    assert row.paths == {"a", "a.b", "a.b.c"}
    with pytest.raises(RowProblem, match="has 1 cells where the header has 5"):
        rows.parse(Record(3, b"only\n"))
    with pytest.raises(RowProblem, match="UTF-8"):
        rows.parse(Record(4, b"\xff,1,,,\n"))


def test_header_problems_name_their_columns():
    with pytest.raises(InvalidInput) as caught:
        parse_header(["email", "a", "a.b", "identity:9x", "", "a..c", "email"])
    assert [(e.column, e.message) for e in caught.value.errors] == [
        (
            4,
            "'identity:9x': a namespace starts with a letter and has up to 64 letters, digits, "
            "'_', '.' or '-'",
        ),
        (5, "column 5 has no name"),
        (6, "'a..c': an attribute path has no empty part"),
        (7, "column 'email' appears twice"),
        (3, "'a.b' is inside 'a', another column"),
    ]
    deep = ".".join("x" * 11)
    with pytest.raises(InvalidInput, match="header"):
        parse_header(["email", deep])


@pytest.mark.parametrize(
    ("requested", "content_type", "expected"),
    [
        (ImportFormat.JSONL, "text/csv", ImportFormat.JSONL),
        (None, "text/csv; charset=utf-8", ImportFormat.CSV),
        (None, "application/x-ndjson", ImportFormat.JSONL),
    ],
)
def test_the_format_comes_from_the_query_or_the_content_type(requested, content_type, expected):
    assert format_for(requested, content_type) is expected


def test_no_format_is_an_error_on_the_format_field():
    with pytest.raises(InvalidInput) as caught:
        format_for(None, "application/json")
    assert caught.value.errors[0].field == "format"
