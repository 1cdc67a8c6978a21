"""SMS bodies: GSM-7 or UCS-2, segments; Twilio's signatures; the generic provider's body."""

from __future__ import annotations

import httpx
import pytest

from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed
from tidings.channels.sms import twilio
from tidings.channels.sms.encoding import GSM7_BASIC, GSM7_EXTENSION, SmsEncoding, measure
from tidings.channels.sms.generic import find, request_body
from tidings.channels.sms.http import retry_after
from tidings.channels.sms.service import Keyword, keyword_of

G, U = SmsEncoding.GSM7, SmsEncoding.UCS2


@pytest.mark.parametrize(
    ("body", "encoding", "units", "segments"),
    [
        ("", G, 0, 1),
        ("Hello", G, 5, 1),
        ("a" * 160, G, 160, 1),
        ("a" * 161, G, 161, 2),
        ("a" * 306, G, 306, 2),
        ("a" * 307, G, 307, 3),
        # Each extension character is an escape and a code: two septets.
        ("€", G, 2, 1),
        ("^{}\\[~]|", G, 16, 1),
        ("a" * 159 + "€", G, 161, 2),
        ("a" * 158 + "€", G, 160, 1),
        # An escape pair is not split: 152 + 2 does not fit 153, so it opens segment 2.
        ("a" * 152 + "€" + "a" * 10, G, 164, 2),
        ("a" * 152 + "€" + "a" * 152, G, 306, 3),
        ("Ça coûte 5 £ à Zürich", U, 21, 1),  # û is not in GSM 03.38
        ("Ça coute 5 £ à Zürich", G, 21, 1),
        ("ΔΦΓΛΩΠΨΣΘΞ", G, 10, 1),
        ("`", U, 1, 1),
        ("é" * 70, G, 70, 1),
        ("ж" * 70, U, 70, 1),
        ("ж" * 71, U, 71, 2),
        ("ж" * 134, U, 134, 2),
        ("ж" * 135, U, 135, 3),
        # An emoji is a surrogate pair: two units, never split.
        ("👍", U, 2, 1),
        ("👍" * 35, U, 70, 1),
        ("👍" * 36, U, 72, 2),
        ("ж" * 66 + "👍" + "ж", U, 69, 1),
        ("ж" * 66 + "👍" + "ж" * 4, U, 72, 2),
    ],
)
def test_encoding_and_segments(body: str, encoding: SmsEncoding, units: int, segments: int):
    measured = measure(body)
    assert (measured.encoding, measured.units, measured.segments) == (encoding, units, segments)


def test_the_gsm_alphabet_has_its_127_characters_and_10_extensions():
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


def test_signature_matches_twilios_documented_example():
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio.signature("12345", url, params) == "GvWf1cFY/Q7PnoempGyD5oXAezc="
    # The order the parameters arrive in does not matter; the token, URL and values do.
    assert twilio.signature_valid("12345", url, params[::-1], "GvWf1cFY/Q7PnoempGyD5oXAezc=")
    assert not twilio.signature_valid("12346", url, params, "GvWf1cFY/Q7PnoempGyD5oXAezc=")
    assert not twilio.signature_valid("12345", url + "&x=1", params, "GvWf1cFY/Q7PnoempGyD5oXAezc=")
    # A header with bytes outside ASCII (latin-1 decoded) is a wrong signature, not an error.
    assert not twilio.signature_valid("12345", url, params, "\xff" + "GvWf1cFY/Q7Pnoemp")
    assert not twilio.signature_valid("12345", url, params, "\udcff")
    assert not twilio.signature_valid("", url, params, "")


def _response(status: int, json: object, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=json, headers=headers)


def test_twilio_answers_are_classified():
    accepted = twilio.classify("m1", _response(201, {"sid": "SM1", "status": "queued"}))
    assert accepted == Accepted("m1", "SM1")
    invalid = twilio.classify(
        "m1", _response(400, {"code": 21211, "message": "Invalid 'To' Phone Number"})
    )
    assert isinstance(invalid, SendFailed)
    assert (invalid.reason, invalid.retryable) == ("twilio_21211", False)
    assert "Invalid 'To'" in invalid.detail
    busy = twilio.classify("m1", _response(429, {"code": 20429}, **{"Retry-After": "7"}))
    assert isinstance(busy, SendFailed)
    assert (busy.reason, busy.retryable, busy.retry_after) == ("twilio_20429", True, 7.0)
    down = twilio.classify("m1", httpx.Response(503, text="<html>down</html>"))
    assert isinstance(down, SendFailed)
    assert (down.reason, down.retryable, down.retry_after) == ("http_503", True, None)


def test_retry_after_takes_seconds_or_a_date():
    assert retry_after(httpx.Response(429, headers={"Retry-After": "120"})) == 120.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after(httpx.Response(429, headers={"Retry-After": past})) == 0.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "99999999"})) == 3600.0


def _message(**settings: object) -> OutboundMessage:
    return OutboundMessage(
        message_id="m1",
        to="+14155550123",
        content={"body": 'Say "hi"\n', "media_urls": ["https://cdn.example.com/a.png"]},
        settings={"from_number": "+14155550100", **settings},
    )


def test_twilio_form_carries_sender_media_and_callback():
    fields = twilio.form(_message(), "https://t.test/webhooks/twilio/status")
    assert fields == [
        ("To", "+14155550123"),
        ("From", "+14155550100"),
        ("Body", 'Say "hi"\n'),
        ("MediaUrl", "https://cdn.example.com/a.png"),
        ("StatusCallback", "https://t.test/webhooks/twilio/status"),
    ]
    service = twilio.form(_message(messaging_service_sid="MG1"), None)
    assert ("MessagingServiceSid", "MG1") in service
    assert all(name != "From" for name, _ in service)


def test_generic_body_template_fills_placeholders_as_data():
    assert request_body(_message()) == {
        "to": "+14155550123",
        "from": "+14155550100",
        "body": 'Say "hi"\n',
    }
    template = {
        "message": {"recipients": ["{{to}}"], "text": "{{body}}", "ref": "tidings-{{message_id}}"},
        "media": "{{media_urls}}",
        "priority": 1,
    }
    assert request_body(_message(body_template=template)) == {
        "message": {"recipients": ["+14155550123"], "text": 'Say "hi"\n', "ref": "tidings-m1"},
        "media": ["https://cdn.example.com/a.png"],
        "priority": 1,
    }


def test_generic_id_path():
    data = {"messages": [{"id": "abc"}], "id": 7}
    assert find(data, "messages.0.id") == "abc"
    assert find(data, "id") == 7
    assert find(data, "messages.1.id") is None
    assert find(data, "nope.x") is None


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", Keyword.STOP),
        ("  stop\n", Keyword.STOP),
        ("StopAll", Keyword.STOP),
        ("unsubscribe", Keyword.STOP),
        ("cancel", Keyword.STOP),
        ("end", Keyword.STOP),
        ("quit", Keyword.STOP),
        ("start", Keyword.START),
        ("Yes", Keyword.START),
        ("UNSTOP", Keyword.START),
        ("please stop", None),
        ("", None),
    ],
)
def test_keywords(body: str, keyword: Keyword | None):
    assert keyword_of(body) is keyword
