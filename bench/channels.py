"""What DKIM signing, open and click tracking and CSS inlining cost end to end, against plain email.

One `tidings serve` (SQLite, in-process worker) into one Postfix smtp-sink, one live
transactional campaign (the 3.7 KB fixture email, whose HTML has a <style> block) per channel
configuration: plain (the reference: CSS inlined, as by default), DKIM with an RSA-2048 key,
DKIM with an Ed25519 key, open and click tracking, and CSS inlining off. Each round triggers
the same number of new recipients through each campaign (20-recipient calls, 16 in flight,
while the worker delivers; first call to the last message's sent_at, as `delivery` measures),
in alternating order (forward, then backward), so a noisy machine shifts every side alike.
The server's CPU time per message over each window is measured too: less disturbed by the
neighbours than the wall-clock rate. Before the rounds, one message of each configuration goes
to a dumping sink and is checked: its DKIM signature verifies (dkimpy), links and the open
pixel are rewritten, the CSS is inlined or not.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim as dkimpy  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bench import live
from bench.delivery import check_all_sent, end_to_end_round, sent_count
from bench.harness import Plan, Result, result
from tidings.channels.email.dkim import dns_record

NAME = "channels"
ROUNDS = 3
QUICK_ROUNDS = 1
MESSAGES = 5_000
QUICK_MESSAGES = 1_000
# Per configuration, not counted: first SMTP sessions, the key loaded, caches.
WARM_UP = 200
CHECK_TIMEOUT = 30.0
DKIM_DOMAIN = "example.com"
DKIM_SELECTOR = "bench"
# A rule of the fixture's <style> block as css-inline copies it into a `style` attribute.
INLINED = '<td style="padding: 8px 12px;'

DkimPrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Variant:
    """One channel configuration: `key` names it in prefixes (no `_` or `%`: they go in LIKE)."""

    key: str
    label: str
    settings: dict[str, Any]
    check: Callable[[bytes], None]


def _pem(key: DkimPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _dkim_settings(key: DkimPrivateKey) -> dict[str, Any]:
    return {
        "dkim_domain": DKIM_DOMAIN,
        "dkim_selector": DKIM_SELECTOR,
        "dkim_private_key": _pem(key),
    }


def _expect(condition: bool, what: str, message: bytes) -> None:
    if not condition:
        raise AssertionError(f"{what}; the message as the sink got it:\n{message[:3000]!r}")


def _html(message: bytes) -> str:
    """The text/html part, decoded (inlining can turn it quoted-printable)."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    part = parsed.get_body(("html",))
    assert isinstance(part, email.message.EmailMessage), "no text/html part"
    content: str = part.get_content()
    return content


def _check_plain(message: bytes, inlined: bool = True) -> None:
    html = _html(message)
    _expect(b"DKIM-Signature:" not in message, "an unexpected DKIM signature", message)
    _expect("/t/c/" not in html, "an unexpected tracked link", message)
    _expect((INLINED in html) is inlined, f"CSS inlined is not {inlined}", message)


def _check_signed(key: DkimPrivateKey, algorithm: bytes) -> Callable[[bytes], None]:
    record = dns_record(key).encode("ascii")
    name = f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode("ascii")

    def dns(query: bytes, timeout: int = 5) -> bytes | None:
        return record if query == name else None

    def check(message: bytes) -> None:
        _expect(b"a=" + algorithm in message, f"no {algorithm.decode()} signature", message)
        _expect(bool(dkimpy.verify(message, dnsfunc=dns)), "the signature fails", message)
        _expect(INLINED in _html(message), "the CSS is not inlined", message)

    return check


def _check_tracked(message: bytes) -> None:
    html = _html(message)
    _expect("/t/c/" in html, "no tracked link", message)
    _expect("/t/o/" in html, "no open pixel", message)


def variants() -> list[Variant]:
    """The configurations, the plain reference first; the DKIM keys are made here."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return [
        Variant("plain", "plain (CSS inlined, the default)", {}, _check_plain),
        Variant(
            "rsa",
            "DKIM RSA-2048",
            _dkim_settings(rsa_key),
            _check_signed(rsa_key, b"rsa-sha256"),
        ),
        Variant(
            "ed25519",
            "DKIM Ed25519",
            _dkim_settings(ed_key),
            _check_signed(ed_key, b"ed25519-sha256"),
        ),
        Variant(
            "tracking",
            "open and click tracking",
            {"open_tracking": True, "click_tracking": True},
            _check_tracked,
        ),
        Variant(
            "noinline",
            "CSS inlining off",
            {"inline_css": False},
            lambda message: _check_plain(message, inlined=False),
        ),
    ]


def _check_variants(
    server: live.Server, dump_port: int, dump_dir: Path, configured: list[Variant]
) -> None:
    """One message of each configuration, through a copy of it that names the dumping sink."""
    for variant in configured:
        campaign = live.live_campaign(
            server,
            f"smtp://{live.HOST}:{dump_port}",
            email_settings=variant.settings,
            name=f"check {variant.key}",
        )
        for path in dump_dir.iterdir():
            path.unlink()
        before = sent_count(server)
        body, _ = live.Bodies(campaign, f"check-{variant.key}-").body(1)
        with server.client() as client:
            response = client.post(
                "/v1/executions", content=body, headers={"Content-Type": "application/json"}
            )
        if response.status_code != 202:
            raise AssertionError(f"check {variant.key}: {response.status_code} {response.text}")
        # `sent` once the sink answered the end of DATA, by when it has written the file.
        deadline = time.monotonic() + CHECK_TIMEOUT
        while sent_count(server) <= before:
            if time.monotonic() > deadline:
                raise AssertionError(f"check {variant.key}: not sent in {CHECK_TIMEOUT:.0f} s")
            time.sleep(0.05)
        check_all_sent(server, f"check-{variant.key}-", 1)
        (path,) = dump_dir.iterdir()
        message = path.read_bytes()
        variant.check(message)


def _cost_note(samples: list[float], plain: list[float]) -> str:
    """Cost in % of the plain throughput and in µs per message (1/rate), from the medians, and
    µs per message paired round by round."""
    rate, reference = statistics.median(samples), statistics.median(plain)
    paired = ", ".join(
        f"{1e6 / one - 1e6 / other:+.0f}" for one, other in zip(samples, plain, strict=True)
    )
    return (
        f"cost {1 - rate / reference:+.1%} of the plain throughput, "
        f"{1e6 / rate - 1e6 / reference:+.0f} µs/message (per round: {paired})"
    )


def run(plan: Plan) -> list[Result]:
    quick = plan.round_seconds < 1.0
    rounds = QUICK_ROUNDS if quick else ROUNDS
    messages = QUICK_MESSAGES if quick else MESSAGES
    load_before = live.load_average()
    configured = variants()
    rates: dict[str, list[float]] = {variant.key: [] for variant in configured}
    cpu: dict[str, list[float]] = {variant.key: [] for variant in configured}
    with tempfile.TemporaryDirectory(prefix="tidings-bench-channels-") as directory:
        root = Path(directory)
        # smtp-sink writes its dump files as `nobody`, who must reach the dump folder.
        root.chmod(0o755)
        data_dir = root / "data"
        data_dir.mkdir()
        dump_dir = root / "dump"
        with live.postfix_sink() as sink_port, live.postfix_sink(dump_dir) as dump_port:
            server = live.Server.start(data_dir, f"smtp://{live.HOST}:{sink_port}")
            try:
                _check_variants(server, dump_port, dump_dir, configured)
                campaigns = {
                    variant.key: live.live_campaign(
                        server, email_settings=variant.settings, name=f"bench {variant.key}"
                    )
                    for variant in configured
                }
                for variant in configured:
                    prefix = f"warm{variant.key}-"
                    bodies = live.Bodies(campaigns[variant.key], prefix)
                    end_to_end_round(server, bodies, WARM_UP, sent_count(server))
                    check_all_sent(server, prefix, WARM_UP)
                for index in range(rounds):
                    # Forward, then backward: no configuration always runs first or last.
                    order = configured if index % 2 == 0 else configured[::-1]
                    for variant in order:
                        prefix = f"r{index}{variant.key}-"
                        bodies = live.Bodies(campaigns[variant.key], prefix)
                        before = server.cpu_seconds()
                        rate, _, _ = end_to_end_round(server, bodies, messages, sent_count(server))
                        cpu[variant.key].append((server.cpu_seconds() - before) / messages * 1e6)
                        check_all_sent(server, prefix, messages)
                        rates[variant.key].append(rate)
            finally:
                server.stop()
    plain = configured[0]
    note = f"load average {load_before} before, {live.load_average()} after"
    reference = result(
        f"end to end, {plain.label}", rates[plain.key], "messages/s", messages, note=note
    )
    cpu_reference = result(
        f"server CPU, {plain.label}",
        cpu[plain.key],
        "µs/message",
        messages,
        note="API and worker, over the same windows",
    )
    results = [reference]
    for variant in configured[1:]:
        results.append(
            result(
                f"end to end, {variant.label}",
                rates[variant.key],
                "messages/s",
                messages,
                reference=reference,
                note=_cost_note(rates[variant.key], rates[plain.key]),
            )
        )
    results.append(cpu_reference)
    for variant in configured[1:]:
        extra = statistics.median(cpu[variant.key]) - cpu_reference.median
        results.append(
            result(
                f"server CPU, {variant.label}",
                cpu[variant.key],
                "µs/message",
                messages,
                reference=cpu_reference,
                note=f"{extra:+.0f} µs/message against plain",
            )
        )
    return results
