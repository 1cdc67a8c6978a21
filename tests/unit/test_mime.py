"""The hand-written MIME builder, checked by parsing its output back with the stdlib parser."""

from __future__ import annotations

import email
import email.header
import email.policy
import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.channels.email import mime
from tidings.channels.email.mime import (
    MessageBuildError,
    build_message,
    envelope,
    html_to_text,
)

# Anything Python can hold in a str that UTF-8 can carry: lone surrogates cannot be.
unicode_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)))


def build(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "message_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "from_address": "news@example.com",
        "from_name": "Example News",
        "to": "reader@example.org",
        "reply_to": None,
        "subject": "Hello",
        "html": "<p>Hello <b>there</b></p>",
        "text": "Hello there",
        "headers": {},
    }
    arguments.update(overrides)
    return build_message(**arguments)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects, message.defects
    return message


def parts(message: EmailMessage) -> list[EmailMessage]:
    return list(message.iter_parts())  # type: ignore[arg-type]


def same_lines(value: str) -> str:
    return re.sub(r"\r\n?", "\n", value)


def check_wire_format(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def transfer_encodings(message: EmailMessage) -> list[str]:
    return [part["Content-Transfer-Encoding"] for part in parts(message)]


def test_a_multipart_message_reads_back():
    raw = build(reply_to="help@example.com", headers={"X-Campaign": "spring-sale"})
    check_wire_format(raw)
    message = parse(raw)

    assert message.get_content_type() == "multipart/alternative"
    plain, html = parts(message)
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert plain.get_content() == "Hello there"
    assert html.get_content() == "<p>Hello <b>there</b></p>"
    assert message["From"] == "Example News <news@example.com>"
    assert message["To"] == "reader@example.org"
    assert message["Reply-To"] == "help@example.com"
    assert message["Subject"] == "Hello"
    assert message["Message-ID"] == "<0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@example.com>"
    assert message["MIME-Version"] == "1.0"
    assert message["X-Campaign"] == "spring-sale"


def test_non_ascii_names_and_subjects_are_encoded_words():
    raw = build(from_name="Zoë Ångström 日本", subject="Привет, мир! 🎉 Ваш заказ отправлен")
    assert b"=?utf-8?b?" in raw
    message = parse(raw)

    [sender] = message["From"].addresses
    assert sender.display_name == "Zoë Ångström 日本"
    assert sender.addr_spec == "news@example.com"
    long_name = "Bäckerei und Konditorei Müller am Marktplatz " * 4
    assert display_name(build(from_name=long_name)) == long_name.strip()
    assert message["Subject"] == "Привет, мир! 🎉 Ваш заказ отправлен"


@pytest.mark.parametrize(
    "name",
    ['Smith, John "JJ"', "J. R. R. Tolkien", "back\\slash", "a  b", "Re: you", "=?x?q?y?="],
)
def test_ascii_names_with_specials_are_quoted_or_encoded(name: str):
    raw = build(from_name=name)
    [sender] = parse(raw)["From"].addresses
    assert sender.display_name == name


def test_a_plain_name_stays_plain():
    assert b"From: Example News <news@example.com>\r\n" in build()
    assert b"From: news@example.com\r\n" in build(from_name=None)


def test_a_long_subject_is_folded():
    subject = " ".join(f"word{i}" for i in range(300))
    raw = build(subject=subject)
    check_wire_format(raw)
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header.split(b"\r\n")) <= 78
    assert parse(raw)["Subject"] == subject


def test_a_subject_word_too_long_for_a_line_is_encoded():
    subject = "x" * 2500
    raw = build(subject=subject)
    check_wire_format(raw)
    assert parse(raw)["Subject"] == subject


def test_line_breaks_in_a_subject_become_spaces_and_inject_nothing():
    message = parse(build(subject="Hi\r\nBcc: victim@example.org\n\tthere"))
    assert message["Bcc"] is None
    assert message["Subject"] == "Hi  Bcc: victim@example.org  there"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nBcc: victim@example.org"},
        {"X-Evil": "a\nb"},
        {"X-Evil": "a\rb"},
        {"X-Evil": "nul\x00"},
        {"Bad Name": "x"},
        {"X-Colon:": "x"},
        {"Bcc": "victim@example.org"},
        {"subject": "again"},
        {"X-Long": "x" * 1200},
    ],
)
def test_unsafe_extra_headers_are_refused(headers: dict[str, str]):
    with pytest.raises(MessageBuildError) as caught:
        build(headers=headers)
    assert caught.value.reason == "invalid_header"


def test_extra_headers_are_folded_and_encoded():
    unsubscribe = "<https://example.com/u/" + "a" * 120 + ">, <mailto:unsub@example.com>"
    raw = build(headers={"List-Unsubscribe": unsubscribe, "X-Note": "Grüße"})
    check_wire_format(raw)
    message = parse(raw)
    assert message["List-Unsubscribe"] == unsubscribe
    assert message["X-Note"] == "Grüße"


@pytest.mark.parametrize("name", ["Evil\r\nBcc: victim@example.org", "tab\there", "nul\x00"])
def test_control_characters_in_the_sender_name_are_refused(name: str):
    with pytest.raises(MessageBuildError) as caught:
        build(from_name=name)
    assert caught.value.reason == "invalid_header"


@pytest.mark.parametrize(
    "field", ["to", "from_address", "reply_to"], ids=["to", "from", "reply-to"]
)
@pytest.mark.parametrize(
    "address",
    [
        "reader@example.org\r\nBcc: victim@example.org",
        "<reader@example.org>",
        "no-at-sign",
        "two words@example.org",
        "reader@",
        "@example.org",
        "ünïcode@example.org",
        "reader@exa mple.org",
        "a" * 250 + "@example.org",
    ],
)
def test_unusable_addresses_are_refused(field: str, address: str):
    with pytest.raises(MessageBuildError) as caught:
        build(**{field: address})
    assert caught.value.reason == "invalid_address"


def test_international_domains_go_out_as_idna():
    raw = build(from_address="news@bäckerei.de", to="kunde@müller.example")
    message = parse(raw)
    assert message["From"].addresses[0].domain == "xn--bckerei-5wa.de"
    assert message["To"] == "kunde@xn--mller-kva.example"
    assert message["Message-ID"].endswith("@xn--bckerei-5wa.de>")
    assert envelope(from_address="news@bäckerei.de", to="kunde@müller.example") == (
        "news@xn--bckerei-5wa.de",
        ["kunde@xn--mller-kva.example"],
    )


def test_message_id_domain_and_date():
    moment = datetime(2026, 3, 1, 23, 30, 5, tzinfo=timezone(timedelta(hours=-5)))
    message = parse(build(domain="mail.example.net", date=moment))
    assert message["Message-ID"] == "<0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@mail.example.net>"
    assert message["Date"] == "Mon, 02 Mar 2026 04:30:05 +0000"
    assert message["Date"].datetime == moment

    now = parsedate_to_datetime(parse(build())["Date"])
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)

    with pytest.raises(MessageBuildError) as caught:
        build(message_id="has space")
    assert caught.value.reason == "invalid_message_id"


def test_html_only_gets_a_text_part_derived_from_it():
    html = (
        "<html><head><title>Spring sale</title><style>p { color: red }</style></head>"
        "<body><script>alert('x')</script>"
        "<h1>Spring&nbsp;sale &amp; more</h1>"
        "<p>Hello   <b>Zoë</b>,\n   see our\n<a href='https://shop.example/sale?a=1&amp;b=2'>new"
        " arrivals</a>.</p>"
        "<p>Line one<br>Line two</p>"
        "<ul><li>First</li><li>Second</li></ul>"
        "<p><a href='https://shop.example/'>https://shop.example/</a>"
        " <a href='mailto:help@shop.example'>help@shop.example</a>"
        " <a href='#top'>Top</a> &lt;3 &#128512;</p>"
        "</body></html>"
    )
    plain, rich = parts(parse(build(html=html, text=None)))
    assert same_lines(rich.get_content()) == html
    assert same_lines(plain.get_content()) == (
        "Spring sale & more\n"
        "\n"
        "Hello Zoë, see our new arrivals (https://shop.example/sale?a=1&b=2).\n"
        "\n"
        "Line one\n"
        "Line two\n"
        "\n"
        "- First\n"
        "- Second\n"
        "\n"
        "https://shop.example/ help@shop.example Top <3 😀"
    )


def test_html_to_text_keeps_image_links_and_table_rows():
    html = (
        "<table><tr><td>Item</td><td>Price</td></tr><tr><td>Tea</td><td>4 €</td></tr></table>"
        "<a href='https://shop.example/buy'><img src='b.png' alt='Buy now'></a>"
        "<a href='https://shop.example/logo'><img src='logo.png'></a>"
    )
    assert html_to_text(html) == (
        "Item Price\nTea 4 €\n\nBuy now (https://shop.example/buy) https://shop.example/logo"
    )


def test_without_html_the_message_is_a_single_text_part():
    message = parse(build(html=None, text="Just text.\nTwo lines."))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert same_lines(message.get_content()) == "Just text.\nTwo lines."


def test_a_message_without_content_is_refused():
    with pytest.raises(MessageBuildError) as caught:
        build(html=None, text="")
    assert caught.value.reason == "empty_body"


def test_mostly_ascii_bodies_are_quoted_printable_and_others_base64():
    english = "Your order has shipped. Grüße, Zoë. " * 20
    russian = "Ваш заказ отправлен. Спасибо за покупку! " * 20
    assert transfer_encodings(parse(build(text=english, html=f"<p>{english}</p>"))) == [
        "quoted-printable",
        "quoted-printable",
    ]
    assert transfer_encodings(parse(build(text=russian, html=f"<p>{russian}</p>"))) == [
        "base64",
        "base64",
    ]
    # A little markup does not make Russian prose worth quoting byte by byte.
    raw = build(text=russian, html=f"<p>{russian}</p>")
    assert b"=D0" not in raw


def test_ascii_bodies_with_short_lines_go_as_they_are():
    html = "<p>Order #42 ships &amp; arrives soon.</p>\n<p>Total: 3 = 1 + 2.</p>\n" * 30
    text = "Order #42 ships.  \n. a line with a dot\nTotal: 3 = 1 + 2"
    raw = build(html=html, text=text)
    check_wire_format(raw)
    message = parse(raw)
    assert transfer_encodings(message) == ["7bit", "7bit"]
    plain, rich = parts(message)
    assert plain.get_content() == text.replace("\n", "\r\n")
    assert same_lines(rich.get_content()) == html
    # A single part ends the message, which ends with a line break: without one of its own,
    # the text is quoted-printable (a soft break adds nothing to it).
    assert transfer_encodings_of_single(build(html=None, text="no break")) == "quoted-printable"
    assert transfer_encodings_of_single(build(html=None, text="a break\n")) == "7bit"
    assert parse(build(html=None, text="a break\n")).get_content() == "a break\r\n"


def transfer_encodings_of_single(raw: bytes) -> str:
    return str(parse(raw)["Content-Transfer-Encoding"])


def test_a_body_holding_the_boundary_is_quoted_printable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mime, "_BOUNDARY_COUNTER", itertools.count(7))
    boundary = f"=_tidings_{mime._BOUNDARY_PREFIX.decode()}_7"
    text = f"--{boundary}\nContent-Type: text/html\n\n<script>x</script>\n--{boundary}--\n"
    raw = build(text=text, html="<p>fine</p>")
    check_wire_format(raw)
    message = parse(raw)
    assert f'boundary="{boundary}"' in str(message["Content-Type"])
    assert transfer_encodings(message) == ["quoted-printable", "7bit"]
    plain, rich = parts(message)
    assert same_lines(plain.get_content()) == text
    assert rich.get_content() == "<p>fine</p>"


def test_long_lines_are_wrapped_by_the_transfer_encoding():
    html = "<p>" + "word " * 5000 + "</p>"  # one 25 KB line, as minified HTML often is
    text = "ж" * 3000 + "\n" + "x" * 3000
    raw = build(html=html, text=text)
    check_wire_format(raw)
    plain, rich = parts(parse(raw))
    assert rich.get_content() == html
    assert same_lines(plain.get_content()) == text


@pytest.mark.parametrize(
    "text",
    ["", "x", "no newline at all " * 10, "ends with newline\n", "trailing space  ", "\r\n\r\n"],
)
def test_edges_of_quoted_printable(text: str):
    raw = build(html="<p>x</p>", text=text or None)
    check_wire_format(raw)
    plain, _ = parts(parse(raw))
    expected = same_lines(text) if text else "x"
    assert same_lines(plain.get_content()) == expected


@pytest.mark.parametrize("length", [74, 75, 76, 77, 150, 151, 152])
def test_quoted_printable_lines_stay_within_76_characters(length: int):
    for tail in ("x", "=", "é"):
        text = "a" * (length - 1) + tail
        raw = build(html=None, text=text)
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76
        assert parse(raw).get_content() == text


@settings(max_examples=300, deadline=None)
@given(subject=unicode_text)
def test_any_subject_reads_back(subject: str):
    raw = build(subject=subject)
    check_wire_format(raw)
    expected = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", subject).strip(" ")
    assert parse(raw)["Subject"] == expected


def display_name(raw: bytes) -> str:
    """The From header's display name as RFC 2047 reads it.

    Python's address parser keeps the whitespace between two encoded-words of a phrase (RFC 2047
    6.2 says to drop it, as mail clients do), so a long non-ASCII name, which takes several
    encoded-words, would read back with spaces it does not have: `email.header` is exact.
    """
    [sender] = parse(raw)["From"].addresses
    value = re.search(rb"^From: (.*?)\r\n(?! )", raw, re.MULTILINE | re.DOTALL)
    assert value is not None
    unfolded = value.group(1).replace(b"\r\n", b"").decode("ascii")
    if not unfolded.startswith("=?"):
        return str(sender.display_name)
    phrase = unfolded.rpartition(" <")[0]
    return str(email.header.make_header(email.header.decode_header(phrase)))


@settings(max_examples=200, deadline=None)
@given(name=unicode_text.filter(lambda name: not re.search(r"[\x00-\x1f\x7f]", name)))
def test_any_sender_name_reads_back(name: str):
    raw = build(from_name=name)
    check_wire_format(raw)
    assert display_name(raw) == name.strip(" ")
    [sender] = parse(raw)["From"].addresses
    assert sender.addr_spec == "news@example.com"


@settings(max_examples=300, deadline=None)
@given(text=unicode_text.filter(bool), html=unicode_text.filter(bool))
def test_any_bodies_read_back(text: str, html: str):
    raw = build(text=text, html=html)
    check_wire_format(raw)
    plain, rich = parts(parse(raw))
    assert same_lines(plain.get_content()) == same_lines(text)
    assert same_lines(rich.get_content()) == same_lines(html)


@settings(max_examples=100, deadline=None)
@given(text=unicode_text.filter(bool))
def test_any_single_part_body_reads_back(text: str):
    raw = build(html=None, text=text)
    check_wire_format(raw)
    assert same_lines(parse(raw).get_content()) == same_lines(text)


@settings(max_examples=200, deadline=None)
@given(html=unicode_text)
def test_html_to_text_takes_any_input(html: str):
    text = html_to_text(html)
    assert "\x00" not in text and "\x01" not in text
    assert text == text.strip("\n")


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.sampled_from([0, 1, 500, 996, 997, 998, 999, 1000, 2500]), min_size=1),
    ends_with_break=st.booleans(),
)
def test_the_line_length_check_agrees_with_splitting(lengths: list[int], ends_with_break: bool):
    data = b"\r\n".join(b"x" * length for length in lengths)
    if ends_with_break:
        data += b"\r\n"
    assert mime._lines_fit(data) == (max(map(len, data.split(b"\r\n"))) <= 998)


@pytest.mark.parametrize(
    ("subject", "name", "body", "encoding"),
    [
        (
            "ご注文ありがとうございます",
            "山田商店",
            "ご注文を承りました。\n発送までお待ちください。",
            "base64",
        ),
        ("مرحبا بك في متجرنا", "متجر", "شكرا لك على طلبك.\nسنرسله قريبا.", "base64"),  # noqa: RUF001
        (
            "Your order 🎉📦 is on its way",
            "Shop 🛍️",
            "Thanks! 🎉\nSee you soon.",
            "quoted-printable",
        ),
        (
            "Ça arrive bientôt",
            "Boutique Élise",
            "Votre commande arrive bientôt.\nMerci.",
            "quoted-printable",
        ),
    ],
)
def test_any_language_reads_back(subject: str, name: str, body: str, encoding: str):
    raw = build(subject=subject, from_name=name, text=body, html=f"<p>{body}</p>")
    check_wire_format(raw)
    message = parse(raw)

    assert message["Subject"] == subject
    assert display_name(raw) == name
    assert message["MIME-Version"] == "1.0"
    assert message["Message-ID"] == "<0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@example.com>"
    assert message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    text_part, html_part = parts(message)
    for part in (text_part, html_part):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == encoding
    assert same_lines(text_part.get_content()).strip() == body
    assert body.split("\n")[0] in html_part.get_content()


def test_derived_text_of_a_non_ascii_html_body():
    html = (
        "<h1>お知らせ</h1><p>詳しくは<a href='https://example.jp/お知らせ'>こちら</a>&nbsp;へ</p>"
    )
    message = parse(build(html=html, text=None))
    text_part, _ = parts(message)
    assert same_lines(text_part.get_content()).strip() == (
        "お知らせ\n\n詳しくはこちら (https://example.jp/お知らせ) へ"
    )
