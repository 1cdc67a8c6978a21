"""Small pure pieces: ids, secrets in settings, identities, attribute paths, error fields."""

from __future__ import annotations

import json
import uuid

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given
from hypothesis import strategies as st

from tidings.channels.service import join_secrets, split_secrets
from tidings.content.schemas import field_path
from tidings.errors import InvalidInput
from tidings.ids import new_id
from tidings.json_data import nesting_depth, plainly_storable, text_nests_within, unstorable
from tidings.profiles.service import _plain_email, attribute_paths, normalize_identity
from tidings.vocabulary import Channel
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal


def test_ids_are_uuid7_and_time_ordered():
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(value).version for value in ids} == {7}


hosts = st.from_regex(r"[a-z]{1,10}\.example\.com", fullmatch=True)
passwords = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@/:?#[]%"),
    min_size=1,
    max_size=20,
)


@given(
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    password=passwords,
    host=hosts,
    port=st.integers(1, 65535),
)
def test_smtp_password_round_trips_through_secrets(user, password, host, port):
    url = f"smtp://{user}:{password}@{host}:{port}"
    public, secrets = split_secrets(Channel.EMAIL, {"smtp_url": url, "from_address": "a@b.co"})
    assert f":{password}@" not in public["smtp_url"]
    assert secrets == {"smtp_password": password}
    assert join_secrets(Channel.EMAIL, public, secrets)["smtp_url"] == url


def test_ipv6_relay_keeps_its_brackets():
    url = "smtp://u:p@[::1]:2525"
    public, secrets = split_secrets(Channel.EMAIL, {"smtp_url": url})
    assert public["smtp_url"] == "smtp://u@[::1]:2525"
    assert join_secrets(Channel.EMAIL, public, secrets)["smtp_url"] == url


def test_an_empty_smtp_password_means_none():
    public, secrets = split_secrets(Channel.EMAIL, {"smtp_url": "smtp://u:@relay.example.com"})
    assert (public["smtp_url"], secrets) == ("smtp://u@relay.example.com", {})


def test_declared_secret_fields_are_split():
    public, secrets = split_secrets(Channel.SMS, {"provider": "twilio", "auth_token": "t"})
    assert public == {"provider": "twilio"}
    assert secrets == {"auth_token": "t"}


@pytest.mark.parametrize(
    ("namespace", "value", "expected"),
    [
        ("email", " Ada@Example.COM ", "ada@example.com"),
        ("phone", "+33612345678", "+33612345678"),
        ("phone", "+1 (415) 555-0100", "+14155550100"),
        ("phone", "+44 (0)7700 900123", "+447700900123"),
        ("crmId", " C-1 ", "C-1"),
    ],
)
def test_identities_are_normalized(namespace, value, expected):
    assert normalize_identity(namespace, value) == expected


@pytest.mark.parametrize(
    ("namespace", "value"), [("email", "nope"), ("phone", "0612"), ("crm", " ")]
)
def test_bad_identities_name_the_field(namespace, value):
    with pytest.raises(InvalidInput) as caught:
        normalize_identity(namespace, value, "recipients.0.id")
    assert [e.field for e in caught.value.errors] == ["recipients.0.id"]


def test_attribute_paths_include_parents_and_stop_at_lists():
    paths = set(attribute_paths({"a": {"b": {"c": 1}}, "tags": [{"x": 1}], "n": 1}))
    assert paths == {"a", "a.b", "a.b.c", "tags", "n"}


def test_field_path_drops_pydantic_key_markers():
    assert field_path(("consent", "fax", "[key]")) == "consent.fax"
    assert field_path(("subject",), "content") == "content.subject"


def test_admin_scope_allows_everything():
    admin = Principal("w", "default", "k", frozenset({Scope.ADMIN}))
    reader = Principal("w", "default", "k", frozenset({Scope.CAMPAIGNS_READ}))
    assert all(admin.allows(scope) for scope in Scope)
    assert reader.allows(Scope.CAMPAIGNS_READ)
    assert not reader.allows(Scope.CAMPAIGNS_WRITE)


def _validator_answer(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


# Characters where the rules are subtle: dots, hyphens, digits, specials, case, non-ASCII.
_EMAIL_ALPHABET = "aZ09.-_+@!'\"é\u00df(x) "


@given(st.text(alphabet=_EMAIL_ALPHABET, min_size=1, max_size=30))
@example("A.B@Example.COM")
@example("a..b@x.com")
@example(".a@x.com")
@example("a.@x.com")
@example("a@x.123")
@example("a@x.c0m")
@example("x@-a.com")
@example("x@a-.com")
@example("x@xn--bcher-kva.com")
@example("a@x.local")
@example("a@sub.localhost")
@example("a@localhost.com")
@example("a@" + "b" * 64 + ".com")
@example("a" * 65 + "@x.com")
@example("a@x.c")
def test_the_plain_email_fast_path_agrees_with_email_validator(address):
    # Whatever the fast path accepts, email_validator accepts as the same address; what it
    # does not know it leaves to email_validator.
    fast = _plain_email(address)
    if fast is not None:
        assert fast == _validator_answer(address)


@pytest.mark.parametrize(
    "address", ["ada@example.com", "Ada.Lovelace+news@Mail.Example.ORG", "x_y-z@a1.b-2.io"]
)
def test_common_addresses_take_the_fast_path(address):
    assert _plain_email(address) == _validator_answer(address)
    local, _, domain = address.partition("@")
    assert _plain_email(address) == f"{local}@{domain.lower()}"


@given(
    st.from_regex(
        r"[a-zA-Z0-9.+_-]{1,10}@([a-zA-Z0-9-]{1,8}\.){1,3}[a-zA-Z0-9-]{1,6}", fullmatch=True
    )
)
def test_address_shaped_strings_get_email_validators_answer(address):
    fast = _plain_email(address)
    if fast is not None:
        assert fast == _validator_answer(address)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        (b'{"a": "x", "n": 1.5e308, "m": -1e-400}', True),
        (b'{"a": "\\u0000"}', False),
        (b'{"a": NaN}', False),
        (b'{"a": -Infinity}', False),
        (b'{"a": 1e400}', False),
        (b'{"a": ' + b"9" * 400 + b".0}", False),
    ],
)
def test_plainly_storable_judges_from_the_text(text, plain):
    assert plainly_storable(text) is plain
    if plain:
        # Never a wrong "yes": what it passes, the full walk passes too.
        assert unstorable(json.loads(text), "body") is None


def _json_containers(children):
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=5), children, max_size=4
    )


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(), _json_containers))
def test_plainly_storable_never_passes_what_the_walk_refuses(value):
    text = json.dumps({"v": value}).encode()
    if plainly_storable(text):
        assert unstorable(json.loads(text), "body") is None


@pytest.mark.parametrize(
    ("value", "depth"),
    [("x", 0), ({}, 1), ([], 1), ({"a": [1, {"b": 2}]}, 3), ([[[[]]]], 4), ({"a": 1, "b": {}}, 2)],
)
def test_nesting_depth_counts_objects_and_lists(value, depth):
    assert nesting_depth(value, cap=100) == depth


def test_nesting_depth_stops_at_its_cap():
    value: object = "leaf"
    for _ in range(5000):
        value = [value]
    assert nesting_depth(value, cap=33) == 33


@given(st.recursive(st.none() | st.integers() | st.text(), _json_containers))
def test_a_text_within_a_depth_never_hides_a_deeper_document(value):
    text = json.dumps(value).encode()
    for depth in (0, 1, 2, 5):
        if text_nests_within(text, depth):
            assert nesting_depth(json.loads(text), cap=depth + 1) <= depth
