"""Where webhooks may go: addresses inside the server's network are refused by default."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from tidings.config import Settings
from tidings.webhooks.client import (
    AddressPolicy,
    HttpWebhookSender,
    Outcome,
    SendResult,
    parse_networks,
    url_problem,
)

DEFAULT = AddressPolicy()

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::a00:1", "private"),
    ("2002:7f00:1::", "loopback"),
    ("192.0.2.10", "documentation"),
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111"]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_addresses_inside_the_network_are_refused_by_default(address, why):
    refusal = DEFAULT.refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address):
    assert DEFAULT.refusal(ipaddress.ip_address(address)) is None


def test_the_operator_allows_networks_or_everything():
    loopback = AddressPolicy(allowed_networks=parse_networks("127.0.0.0/8, 10.0.0.5"))
    assert loopback.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert loopback.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert loopback.refusal(ipaddress.ip_address("10.0.0.5")) is None
    assert loopback.refusal(ipaddress.ip_address("10.0.0.6")) is not None
    assert loopback.refusal(ipaddress.ip_address("169.254.169.254")) is not None
    everything = AddressPolicy(allow_private=True)
    assert everything.refusal(ipaddress.ip_address("169.254.169.254")) is None


def test_the_policy_comes_from_the_settings():
    settings = Settings(webhook_allowed_networks="192.168.0.0/16")
    policy = AddressPolicy.from_settings(settings)
    assert policy.refusal(ipaddress.ip_address("192.168.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is not None
    with pytest.raises(ValueError, match="ALLOWED_NETWORKS"):
        Settings(webhook_allowed_networks="not-a-network")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("ftp://hooks.example.com/", "http"),
        ("file:///etc/passwd", "http"),
        ("hooks.example.com/path", "http"),
        ("https://user:pass@hooks.example.com/", "password"),
        ("https:///nohost", "host"),
    ],
)
def test_urls_are_checked_as_written(url, problem):
    found = url_problem(url, DEFAULT)
    assert found is not None and problem in found


def test_public_urls_and_allowed_loopback_pass():
    assert url_problem("https://hooks.example.com/tidings?x=1", DEFAULT) is None
    # Names are resolved and checked at every delivery, not here (they may change meanwhile).
    assert url_problem("http://localhost:9000/hook", DEFAULT) is None
    assert url_problem("http://127.0.0.1:8080/", AddressPolicy(allow_private=True)) is None


def test_a_name_resolving_inside_the_network_is_refused_before_connecting():
    async def resolver(host: str, port: int) -> list[ipaddress.IPv4Address]:
        # One public address and one private: refused whichever comes first.
        return [ipaddress.IPv4Address("93.184.216.34"), ipaddress.IPv4Address("10.0.0.7")]

    sender = HttpWebhookSender(DEFAULT, resolver=resolver)
    result = asyncio.run(sender.send("https://rebind.example/hook", {}, b"{}"))
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert result.error is not None and "10.0.0.7" in result.error


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (301, Outcome.RETRY),
        (400, Outcome.RETRY),
        (410, Outcome.GONE),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
    ],
)
def test_statuses_are_classified(status, outcome):
    result = SendResult.of_status(status, None, 1)
    assert result.outcome is outcome
    assert (result.error is None) == (outcome is Outcome.DELIVERED)
