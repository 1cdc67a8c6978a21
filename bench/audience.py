"""Issue 4 at scale: 1,000,000 generated profiles imported over HTTP, then an audience execution.

One `tidings serve` process on SQLite (its own temporary data folder) relays into Postfix's
smtp-sink. The benchmark writes a CSV of generated profiles to disk, streams it to
`POST /v1/profiles/imports`, creates a rule audience over a subset whose size it knows from the
generation, checks the estimate, points a live marketing email campaign at the audience and
fires an audience execution. It measures the import rate, the fan-out rate (members queued per
second) and the server's resident memory throughout (/proc/<pid>/status). The in-process
worker starts delivering while it fans out, as it would in production; the server is stopped
once the fan-out is done, long before the last message is sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import fixtures, live
from bench.harness import Plan, Result, result
from tidings.audiences.service import ESTIMATE_CAP

NAME = "audience"
PROFILES = 1_000_000
QUICK_PROFILES = 20_000
SEED = 4
PLANS = (("free", 0.55), ("pro", 0.30), ("gold", 0.15))
COUNTRIES = ("FR", "DE", "GB", "US", "ES", "IT", "NL", "BE", "CA", "JP")
DOMAINS = ("example.com", "example.org", "example.net")
# Email consent: "in" for most, "out" for some, not given (unset) for the rest.
CONSENT_IN, CONSENT_OUT = 0.85, 0.05
CONSENT_OUT_BELOW = CONSENT_IN + CONSENT_OUT
RULE = 'attributes.plan in ["pro", "gold"] and consent.email == "in"'
HEADER = "email,plan,country,signup,score,consent:email\n"
SIGNUP_START = dt.date(2023, 1, 1)
SIGNUP_DAYS = 3 * 365
UPLOAD_CHUNK = 1024 * 1024
IMPORT_TIMEOUT = 1800.0
FAN_OUT_TIMEOUT = 900.0
POLL_SECONDS = 0.1
# How long delivery is watched once the fan-out is done.
AFTER_SECONDS = 5.0
RSS_SAMPLE_SECONDS = 0.1
MIB = 1024 * 1024

# (seconds since the start, items done so far), sampled.
Progress = list[tuple[float, int]]


@dataclass(frozen=True, slots=True)
class Generated:
    path: Path
    profiles: int
    matching: int  # profiles the rule matches
    size: int  # bytes


def generate(path: Path, profiles: int, seed: int = SEED) -> Generated:
    """Writes a CSV of `profiles` generated profiles to `path`, a block of lines at a time;
    returns how many of them RULE matches."""
    rng = random.Random(seed)
    names = [name for name, _ in PLANS]
    weights = [weight for _, weight in PLANS]
    matching = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        block: list[str] = []
        for number in range(profiles):
            plan = rng.choices(names, weights)[0]
            draw = rng.random()
            consent = "in" if draw < CONSENT_IN else "out" if draw < CONSENT_OUT_BELOW else ""
            if plan != "free" and consent == "in":
                matching += 1
            signup = SIGNUP_START + dt.timedelta(days=rng.randrange(SIGNUP_DAYS))
            block.append(
                f"user{number}@{DOMAINS[number % len(DOMAINS)]},{plan},"
                f"{rng.choice(COUNTRIES)},{signup.isoformat()},{rng.randrange(101)},{consent}\n"
            )
            if len(block) >= 10_000:
                out.write("".join(block))
                block.clear()
        out.write("".join(block))
    return Generated(path, profiles, matching, path.stat().st_size)


# ---------------------------------------------------------------- memory


def _status_kib(pid: int, key: str) -> int:
    """A `kB` line of /proc/<pid>/status: VmRSS (resident now) or VmHWM (its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") * 1024 / MIB


def peak_rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmHWM") * 1024 / MIB


@dataclass
class RssSampler:
    """The largest VmRSS seen, sampled in a thread every RSS_SAMPLE_SECONDS; with `progress`,
    also (seconds since the start, what it returns) at each sample."""

    pid: int
    progress: Callable[[], int] | None = None
    peak: float = 0.0
    samples: Progress = field(default_factory=list)
    _started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, rss_mib(self.pid))
        if self.progress is not None:
            self.samples.append((time.perf_counter() - self._started, self.progress()))

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        def loop() -> None:
            while not self._stop.wait(RSS_SAMPLE_SECONDS):
                self.sample()

        self._started = time.perf_counter()
        self.sample()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.sample()


def half_rates(progress: Progress, total: int, seconds: float) -> tuple[float, float]:
    """Items per second over the first and the second half of `total`, from (seconds, items
    done) samples; `seconds` is when the last was done."""
    middle = next(((t, n) for t, n in progress if n >= total / 2), (seconds, total))
    first = middle[1] / middle[0] if middle[0] > 0 else float("nan")
    second = (total - middle[1]) / (seconds - middle[0]) if seconds > middle[0] else float("nan")
    return first, second


# ---------------------------------------------------------------- import


@dataclass(frozen=True, slots=True)
class Imported:
    seconds: float
    report: dict[str, Any]
    server_cpu: float
    peak_rss: float  # MiB, largest VmRSS sampled during the import
    progress: Progress  # (seconds since the call, profiles stored)

    def half_rates(self, profiles: int) -> tuple[float, float]:
        return half_rates(self.progress, profiles, self.seconds)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(UPLOAD_CHUNK):
            yield chunk


def import_file(server: live.Server, generated: Generated) -> Imported:
    """Streams the file to POST /v1/profiles/imports (declared length, 1 MiB chunks) and
    checks that every profile was created and none rejected. Progress is the largest rowid of
    the profiles table (rows are only added), read from the database file alongside."""
    database = server.database()
    sampler = RssSampler(
        server.process.pid,
        lambda: database.execute("SELECT coalesce(max(rowid), 0) FROM profiles").fetchone()[0],
    )
    cpu = server.cpu_seconds()
    with contextlib.closing(database), server.client() as client, sampler.running():
        client.timeout = httpx.Timeout(IMPORT_TIMEOUT, connect=10)
        started = time.perf_counter()
        response = client.post(
            "/v1/profiles/imports",
            content=_file_chunks(generated.path),
            headers={"Content-Type": "text/csv", "Content-Length": str(generated.size)},
        )
        seconds = time.perf_counter() - started
    report = live._expect(response, 200)
    if report["rejected_total"] or report["created"] != generated.profiles:
        raise AssertionError(
            f"the import created {report['created']} of {generated.profiles} profiles, "
            f"rejected {report['rejected_total']}: {report['rejected'][:5]}"
        )
    return Imported(seconds, report, server.cpu_seconds() - cpu, sampler.peak, sampler.samples)


# ---------------------------------------------------------------- audience and campaign


def create_audience(server: live.Server, generated: Generated) -> tuple[str, dict[str, Any], float]:
    """The rule audience; checks the estimate against the count known from the generation
    (capped as the server caps it); returns (id, estimate, seconds the estimate took)."""
    expected = {
        "count": min(generated.matching, ESTIMATE_CAP),
        "exact": generated.matching <= ESTIMATE_CAP,
    }
    with server.client() as client:
        client.timeout = httpx.Timeout(300, connect=10)
        started = time.perf_counter()
        estimate = live._expect(client.post("/v1/audiences/estimate", json={"rule": RULE}), 200)
        seconds = time.perf_counter() - started
        if estimate != expected:
            raise AssertionError(f"estimate {estimate}, expected {expected}")
        audience = live._expect(
            client.post("/v1/audiences", json={"name": "Paying, opted in", "rule": RULE}), 201
        )
    if audience["estimate"] != expected:
        raise AssertionError(f"audience estimate {audience['estimate']}, expected {expected}")
    audience_id: str = audience["id"]
    return audience_id, estimate, seconds


def audience_campaign(server: live.Server, audience_id: str) -> str:
    """live.live_campaign's marketing email, its live version then pointed at the audience
    (a PATCH opens version 2, activating makes it live)."""
    campaign_id = live.live_campaign(server, category="marketing")
    with server.client() as client:
        live._expect(
            client.patch(
                f"/v1/campaigns/{campaign_id}",
                json={"audience": {"audience_id": audience_id, "create_new_profiles": False}},
            ),
            200,
        )
        activated = live._expect(client.post(f"/v1/campaigns/{campaign_id}/activate"), 200)
    if activated["status"] != "live" or activated["audience"]["audience_id"] != audience_id:
        raise AssertionError(f"the campaign does not target the audience: {activated}")
    return campaign_id


# ---------------------------------------------------------------- fan-out


@dataclass
class FannedOut:
    recipients: int
    seconds: float  # fired_at (server's clock) to the first poll that saw the fan-out done
    since_call: float  # the POST sent to the same poll
    rss_before: float  # MiB
    peak_rss: float  # MiB, largest VmRSS sampled from the call to the end of the fan-out
    server_cpu: float
    sent: int  # messages sent by the time the fan-out was seen done
    sent_after: float  # messages/s sent over the AFTER_SECONDS after that
    progress: Progress  # (seconds since fired_at, recipients queued)
    rss: list[tuple[int, float]]  # (recipients queued, VmRSS in MiB) at each poll

    def rss_at(self, fraction: float) -> float:
        """VmRSS at the first poll that saw `fraction` of the members queued."""
        return next(mib for queued, mib in self.rss if queued >= fraction * self.recipients)

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds

    def half_rates(self) -> tuple[float, float]:
        """Members queued per second over the first and the second half of the members."""
        return half_rates(self.progress, self.recipients, self.seconds)


def _timestamp(value: str) -> float:
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def fan_out(server: live.Server, campaign_id: str, expected: int) -> FannedOut:
    """Fires the audience execution and polls its row (read-only, every POLL_SECONDS) and the
    server's VmRSS until the fan-out is done."""
    pid = server.process.pid
    rss_before = rss_mib(pid)
    cpu = server.cpu_seconds()
    sampler = RssSampler(pid)
    progress: Progress = []
    rss: list[tuple[int, float]] = []
    with contextlib.closing(server.database()) as database, sampler.running():
        with server.client() as client:
            called = time.time()
            answer = live._expect(
                client.post(
                    "/v1/executions", json={"campaign_id": campaign_id, "context": fixtures.CONTEXT}
                ),
                202,
            )
        deadline = time.monotonic() + FAN_OUT_TIMEOUT
        while True:
            status, count, fired_at, failure = database.execute(
                "SELECT status, recipient_count, fired_at, failure FROM executions WHERE id = ?",
                (answer["execution_id"],),
            ).fetchone()
            now = time.time()
            if fired_at is not None:
                progress.append((now - _timestamp(fired_at), count))
                rss.append((count, rss_mib(pid)))
            if status not in ("scheduled", "fanning_out"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the fan-out did not end in {FAN_OUT_TIMEOUT:.0f} s")
            time.sleep(POLL_SECONDS)
        cpu = server.cpu_seconds() - cpu

        def sent_so_far() -> tuple[int, float]:
            (sent,) = database.execute(
                "SELECT count(*) FROM messages WHERE execution_id = ? AND state = 'sent'",
                (answer["execution_id"],),
            ).fetchone()
            return sent, time.perf_counter()

        sent, counted = sent_so_far()
        time.sleep(AFTER_SECONDS)
        sent_later, counted_later = sent_so_far()
    if status != "accepted" or count != expected:
        raise AssertionError(f"the execution is {status} with {count} of {expected}: {failure}")
    return FannedOut(
        recipients=count,
        seconds=now - _timestamp(fired_at),
        since_call=now - called,
        rss_before=rss_before,
        peak_rss=sampler.peak,
        server_cpu=cpu,
        sent=sent,
        sent_after=(sent_later - sent) / (counted_later - counted),
        progress=progress,
        rss=rss,
    )


def _data_mib(data_dir: Path) -> float:
    return sum(path.stat().st_size for path in data_dir.glob("tidings.db*")) / MIB


# ---------------------------------------------------------------- the benchmark


def run(plan: Plan) -> list[Result]:
    quick = plan.round_seconds < 1.0
    count = QUICK_PROFILES if quick else PROFILES
    load_before = live.load_average()
    with tempfile.TemporaryDirectory(prefix="tidings-bench-audience-") as directory:
        root = Path(directory)
        data_dir = root / "data"
        data_dir.mkdir()
        started = time.perf_counter()
        generated = generate(root / "profiles.csv", count)
        generation = time.perf_counter() - started
        with live.postfix_sink() as sink_port:
            server = live.Server.start(data_dir, f"smtp://{live.HOST}:{sink_port}")
            try:
                pid = server.process.pid
                peak_before = peak_rss_mib(pid)
                imported = import_file(server, generated)
                peak_after_import = peak_rss_mib(pid)
                database_after_import = _data_mib(data_dir)
                load_after_import = live.load_average()
                audience_id, estimate, estimate_seconds = create_audience(server, generated)
                campaign_id = audience_campaign(server, audience_id)
                fanned = fan_out(server, campaign_id, generated.matching)
                peak_after_fan_out = peak_rss_mib(pid)
                database_after_fan_out = _data_mib(data_dir)
            finally:
                server.stop()
    load_after = live.load_average()
    first_half, second_half = fanned.half_rates()
    import_first, import_second = imported.half_rates(count)
    import_rate = result(
        f"import of {count:,} profiles (CSV, streamed)",
        [count / imported.seconds],
        "profiles/s",
        count,
        note=(
            f"{generated.size / MIB:.0f} MiB file (generated in {generation:.1f} s) in "
            f"{imported.seconds:.1f} s; first half {import_first:,.0f}/s, second half "
            f"{import_second:,.0f}/s; rejected {imported.report['rejected_total']}; server CPU "
            f"{imported.server_cpu / count * 1e6:.0f} us per profile "
            f"({imported.server_cpu / imported.seconds:.0%} of a core); SQLite files "
            f"{database_after_import:.0f} MiB after; load average {load_before} before, "
            f"{load_after_import} after"
        ),
    )
    fan_out_rate = result(
        f"audience execution fan-out ({fanned.recipients:,} members queued)",
        [fanned.rate],
        "members/s",
        fanned.recipients,
        note=(
            f"fired_at to the fan-out seen done, {fanned.seconds:.1f} s ({fanned.since_call:.1f} s "
            f"from the call); first half {first_half:,.0f}/s, second half {second_half:,.0f}/s; "
            f"the worker delivered meanwhile: {fanned.sent:,} sent by then "
            f"({fanned.sent / fanned.seconds:,.0f}/s), then {fanned.sent_after:,.0f}/s over the "
            f"next {AFTER_SECONDS:.0f} s; server CPU "
            f"{fanned.server_cpu / fanned.recipients * 1e6:.0f} us per member; estimate "
            f"{estimate['count']:,} (exact: {estimate['exact']}) in {estimate_seconds:.2f} s; "
            f"SQLite files {database_after_fan_out:.0f} MiB after; load average {load_after}"
        ),
    )
    return [
        import_rate,
        fan_out_rate,
        result("server peak RSS before the import (VmHWM)", [peak_before], "MiB", 1),
        result(
            "server peak RSS after the import (VmHWM)",
            [peak_after_import],
            "MiB",
            count,
            note=f"largest VmRSS sampled during the import {imported.peak_rss:.0f} MiB",
        ),
        result("server RSS before the fan-out (VmRSS)", [fanned.rss_before], "MiB", 1),
        result(
            "server peak RSS during the fan-out (largest VmRSS sampled)",
            [fanned.peak_rss],
            "MiB",
            fanned.recipients,
            note=(
                "VmRSS at 25 / 50 / 75 / 100 % of the members queued: "
                + " / ".join(f"{fanned.rss_at(f):.0f}" for f in (0.25, 0.5, 0.75, 1.0))
                + f" MiB; VmHWM after the fan-out {peak_after_fan_out:.0f} MiB"
            ),
        ),
    ]
