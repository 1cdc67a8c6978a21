"""Unsubscribe tokens and the secret key that signs them."""

from __future__ import annotations

import base64
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.config import Settings
from tidings.ids import new_id
from tidings.secret_key import SecretKeyError, key_path, load_secret_key
from tidings.unsubscribe import tokens
from tidings.unsubscribe.tokens import TOKEN_CHARS, UnsubscribeToken, UnsubscribeTokens
from tidings.vocabulary import Channel

KEY = b"k" * 32
WORKSPACE, OTHER_WORKSPACE, MESSAGE = new_id(), new_id(), new_id()


def decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def signed(raw_payload: bytes, key: bytes = KEY) -> str:
    """A token over any payload, MAC'd as the module does (the reference HMAC of the stdlib)."""
    derived = hmac.digest(key, tokens._PURPOSE, "sha256")
    return encode(raw_payload + hmac.digest(derived, raw_payload, "sha256")[: tokens.MAC_BYTES])


@pytest.mark.parametrize("channel", list(Channel))
def test_a_token_names_its_workspace_message_and_channel(channel: Channel):
    signer = UnsubscribeTokens(KEY)
    token = signer.mint(WORKSPACE, MESSAGE, channel)
    assert len(token) == TOKEN_CHARS == 67
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert signer.verify(token) == UnsubscribeToken(WORKSPACE, MESSAGE, channel)
    # Another instance under the same key (another process) reads it; the channel as text too.
    assert UnsubscribeTokens(KEY).verify(token) == UnsubscribeToken(WORKSPACE, MESSAGE, channel)
    assert signer.mint(WORKSPACE, MESSAGE, channel.value) == token


def test_the_mac_is_hmac_sha256_under_a_derived_key():
    token = UnsubscribeTokens(KEY).mint(WORKSPACE, MESSAGE, Channel.EMAIL)
    raw = decode(token)
    assert signed(raw[:34]) == token
    # Not the secret key itself: a MAC made for another purpose opens nothing.
    plain = encode(raw[:34] + hmac.digest(KEY, raw[:34], "sha256")[:16])
    assert UnsubscribeTokens(KEY).verify(plain) is None


def test_every_changed_byte_or_character_is_refused():
    signer = UnsubscribeTokens(KEY)
    token = signer.mint(WORKSPACE, MESSAGE, Channel.EMAIL)
    raw = decode(token)
    for index in range(len(raw)):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        assert signer.verify(encode(bytes(tampered))) is None, index
    for index in range(len(token)):
        replacement = "A" if token[index] != "A" else "B"
        assert signer.verify(token[:index] + replacement + token[index + 1 :]) is None, index


@pytest.mark.parametrize(
    "token",
    ["", "preview", "a" * 66, "a" * 68, "a" * 66 + "=", "a" * 66 + "+", "é" * 67, "a" * 10_000],
)
def test_malformed_tokens_are_refused(token: str):
    assert UnsubscribeTokens(KEY).verify(token) is None


def test_a_non_canonical_spelling_of_a_valid_token_is_refused():
    token = UnsubscribeTokens(KEY).mint(WORKSPACE, MESSAGE, Channel.SMS)
    # 50 bytes leave 2 spare bits in the last character, which decoders ignore.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    sibling = token[:-1] + alphabet[last ^ 0b01]
    assert decode(sibling) == decode(token)
    assert UnsubscribeTokens(KEY).verify(sibling) is None


def test_another_key_refuses_it():
    token = UnsubscribeTokens(KEY).mint(WORKSPACE, MESSAGE, Channel.EMAIL)
    assert UnsubscribeTokens(b"x" * 32).verify(token) is None


def test_a_token_for_another_workspace_names_that_workspace_only():
    """A payload naming workspace B never reads as workspace A's, even for the same message."""
    signer = UnsubscribeTokens(KEY)
    mine = signer.mint(WORKSPACE, MESSAGE, Channel.EMAIL)
    theirs = signer.mint(OTHER_WORKSPACE, MESSAGE, Channel.EMAIL)
    assert mine != theirs
    assert signer.verify(theirs) == UnsubscribeToken(OTHER_WORKSPACE, MESSAGE, Channel.EMAIL)
    # Swapping the workspace bytes of a valid token breaks its MAC.
    raw = bytearray(decode(mine))
    raw[1:17] = bytes.fromhex(OTHER_WORKSPACE.replace("-", ""))
    assert signer.verify(encode(bytes(raw))) is None


def test_another_version_or_channel_code_is_refused_even_when_signed():
    raw = decode(UnsubscribeTokens(KEY).mint(WORKSPACE, MESSAGE, Channel.EMAIL))
    payload = raw[:34]
    assert UnsubscribeTokens(KEY).verify(signed(payload)) is not None
    assert UnsubscribeTokens(KEY).verify(signed(b"\x02" + payload[1:])) is None
    assert UnsubscribeTokens(KEY).verify(signed(b"\x00" + payload[1:])) is None
    assert UnsubscribeTokens(KEY).verify(signed(payload[:-1] + b"x")) is None


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "42",
        "not-a-uuid",
        "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5z",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4 5b",
    ],
)
def test_ids_must_be_uuids(bad_id: str):
    with pytest.raises(ValueError):
        UnsubscribeTokens(KEY).mint(WORKSPACE, bad_id, Channel.EMAIL)
    with pytest.raises(ValueError):
        UnsubscribeTokens(KEY).mint(bad_id, MESSAGE, Channel.EMAIL)


def test_an_empty_key_is_refused():
    with pytest.raises(ValueError):
        UnsubscribeTokens(b"")


@given(st.uuids(), st.uuids(), st.sampled_from(list(Channel)), st.binary(min_size=1, max_size=64))
def test_roundtrip_of_any_ids_and_key(workspace, message, channel, key):
    signer = UnsubscribeTokens(key)
    token = signer.mint(str(workspace), str(message), channel)
    assert signer.verify(token) == UnsubscribeToken(str(workspace), str(message), channel)
    assert signed(decode(token)[:34], key) == token


# --- the secret key -------------------------------------------------------------------------


def test_a_set_secret_key_is_used_as_is(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, secret_key="s" * 40)
    assert load_secret_key(settings) == b"s" * 40
    assert not key_path(settings).exists()


def test_a_short_secret_key_is_refused_at_start():
    with pytest.raises(ValueError, match="TIDINGS_SECRET_KEY"):
        Settings(secret_key="too short")


def test_an_unset_key_is_generated_once_private_and_kept(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data")
    first = load_secret_key(settings)
    path = key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 43
    assert load_secret_key(Settings(data_dir=tmp_path / "data")) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]
    assert load_secret_key(Settings(data_dir=tmp_path / "other")) != first


def test_processes_starting_together_agree_on_one_key(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    found: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        found.append(load_secret_key(settings))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert sorted(os.listdir(tmp_path)) == ["secret_key"]


def test_an_unusable_key_file_stops_the_start(tmp_path: Path):
    key_path(Settings(data_dir=tmp_path)).write_text("\n")
    with pytest.raises(SecretKeyError, match="no usable key"):
        load_secret_key(Settings(data_dir=tmp_path))


def test_tokens_under_the_generated_key_survive_a_restart(tmp_path: Path):
    token = UnsubscribeTokens(load_secret_key(Settings(data_dir=tmp_path))).mint(
        WORKSPACE, MESSAGE, Channel.EMAIL
    )
    restarted = UnsubscribeTokens(load_secret_key(Settings(data_dir=tmp_path)))
    assert restarted.verify(token) == UnsubscribeToken(WORKSPACE, MESSAGE, Channel.EMAIL)
