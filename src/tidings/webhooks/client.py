"""The outbound port of webhooks: an HTTP sender that goes only where a customer may point it.

A webhook URL is chosen by whoever holds an admin key, so the sender treats it as hostile: it
resolves the host itself and refuses addresses inside the operator's network (loopback,
RFC 1918, unique-local, link-local with the cloud metadata service, CGNAT, multicast, reserved,
and IPv4 addresses dressed as IPv6), unless the operator allows them
(TIDINGS_WEBHOOK_ALLOW_PRIVATE, TIDINGS_WEBHOOK_ALLOWED_NETWORKS). It then connects to the
address it checked, not to a second resolution of the name (which a rebinding DNS server
could point elsewhere), never follows redirects, never uses proxies from the environment, and
bounds the time and the bytes a receiver can take.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import httpx

from tidings.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
# What a delivery log keeps of a response body, and the most read of one.
RESPONSE_SNIPPET_CHARS = 512
MAX_RESPONSE_BYTES = 64 * 1024
# Beside httpx's per-operation timeouts: a receiver dripping a byte a second is cut off too.
DEFAULT_TIMEOUT_SECONDS = 10.0
# Host names whose connections are kept open for the next delivery.
MAX_POOLED_HOSTS = 64

# Networks no webhook may reach by default, with the words the error uses.
_FORBIDDEN: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), why)
    for cidr, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "reserved"),
        ("100::/64", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved (site local)"),
        ("ff00::/8", "multicast"),
    )
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any: a
    kernel routes ::ffff:127.0.0.1 to loopback."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if packed[:12] == bytes(12) and address not in (
        ipaddress.IPv6Address("::"),
        ipaddress.IPv6Address("::1"),
    ):
        return ipaddress.IPv4Address(packed[12:])  # IPv4-compatible ::a.b.c.d (deprecated)
    if ipaddress.IPv6Address(packed[:12] + bytes(4)) == ipaddress.IPv6Address("64:ff9b::"):
        return ipaddress.IPv4Address(packed[12:])  # NAT64 well-known prefix
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses webhooks may reach: public ones, plus what the operator allows."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(
            allow_private=settings.webhook_allow_private,
            allowed_networks=parse_networks(settings.webhook_allowed_networks),
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        if self.allow_private or any(address in net for net in self.allowed_networks):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                why = self.refusal(embedded)
                return f"{why} (IPv4 {embedded} inside IPv6)" if why else None
        for network, why in _FORBIDDEN:
            if address.version == network.version and address in network:
                return f"{address} is {why}"
        return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8, 127.0.0.1` as networks (a bare address is a one-address network)."""
    networks = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
    return tuple(networks)


def url_problem(url: str, policy: AddressPolicy) -> str | None:
    """What is wrong with a webhook URL as written, or None. Names are checked again after
    resolution, at every delivery: here only the literal addresses are."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "is not a URL"
    if parsed.scheme not in ALLOWED_SCHEMES:
        return "must be an http:// or https:// URL"
    if not parsed.host:
        return "has no host"
    if parsed.userinfo:
        return "must not carry a user name or password (the signature authenticates Tidings)"
    if parsed.fragment:
        return "must not have a #fragment"
    literal = _literal_address(parsed.host)
    if literal is not None:
        why = policy.refusal(literal)
        if why is not None:
            return f"points inside the server's network: {why}"
    return None


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    # The receiver said the endpoint is gone (410): no more retries, the endpoint disabled.
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    status_code: int | None = None
    # What went wrong, for the delivery log (None when delivered).
    error: str | None = None
    response_snippet: str | None = None
    duration_ms: int = 0

    @classmethod
    def of_status(cls, status_code: int, snippet: str | None, duration_ms: int) -> SendResult:
        if 200 <= status_code < 300:
            return cls(Outcome.DELIVERED, status_code, None, snippet, duration_ms)
        if status_code == 410:
            return cls(
                Outcome.GONE, status_code, "410 Gone: endpoint disabled", snippet, duration_ms
            )
        if 300 <= status_code < 400:
            error = f"HTTP {status_code}: redirects are not followed"
        else:
            error = f"HTTP {status_code}"
        return cls(Outcome.RETRY, status_code, error, snippet, duration_ms)


class WebhookSender(Protocol):
    """Posts one signed body to one URL and says what came of it; never raises for the
    receiver's faults."""

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult: ...

    async def close(self) -> None: ...


Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]


# getaddrinfo blocks: lookups get threads of their own, so that a tenant's name server that
# never answers holds up neither the worker's database calls (asyncio.to_thread's executor)
# nor more than this many lookups.
_RESOLVER_THREADS = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="tidings-webhook-dns"
)
RESOLVE_TIMEOUT_SECONDS = 5.0


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, looked up in a thread of the resolver's own, within
    RESOLVE_TIMEOUT_SECONDS."""
    loop = asyncio.get_running_loop()
    lookup = functools.partial(
        socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.run_in_executor(_RESOLVER_THREADS, lookup)
    except TimeoutError:
        raise OSError(f"no answer within {RESOLVE_TIMEOUT_SECONDS:g} s") from None
    seen: dict[str, IPAddress] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        seen.setdefault(text, ipaddress.ip_address(text))
    return list(seen.values())


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address the policy refuses."""


@dataclass
class HttpWebhookSender:
    """The real sender (httpx), pinned to the address it checked."""

    policy: AddressPolicy
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_connections: int = 32
    resolver: Resolver = resolve_host
    # Certificates are verified against the URL's host name (True: the system's CAs; tests
    # give a context trusting their own).
    verify: ssl.SSLContext | bool = True
    # One client per host name: connections are pooled by the address they go to, and a TLS
    # connection set up (SNI, certificate) for one name must not carry another's requests.
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict, init=False, repr=False)
    _in_use: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _ssl_context: ssl.SSLContext | None = field(default=None, init=False, repr=False)
    _closing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def _http(self, host: str) -> httpx.AsyncClient:
        client = self._clients.pop(host, None)
        if client is None:
            self._retire_idle()
            if self._ssl_context is None:
                # Built once: loading the CA bundle for every client cost ~0.1 s each.
                self._ssl_context = (
                    self.verify
                    if isinstance(self.verify, ssl.SSLContext)
                    else httpx.create_ssl_context(verify=self.verify)
                )
            client = httpx.AsyncClient(
                follow_redirects=False,
                verify=self._ssl_context,
                # No HTTP(S)_PROXY from the environment: a proxy would reach what we refused.
                trust_env=False,
                timeout=httpx.Timeout(self.timeout_seconds, connect=min(5.0, self.timeout_seconds)),
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=4,
                    keepalive_expiry=30.0,
                ),
            )
        self._clients[host] = client  # most recently used last
        return client

    def _retire_idle(self) -> None:
        """Closes the least recently used idle clients beyond MAX_POOLED_HOSTS."""
        idle = [host for host in self._clients if not self._in_use.get(host)]
        for host in idle[: max(0, len(self._clients) - MAX_POOLED_HOSTS + 1)]:
            task = asyncio.create_task(self._clients.pop(host).aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def pinned_address(self, url: httpx.URL) -> IPAddress:
        """The address to connect to: the literal one, or the first the name resolves to,
        provided every address it resolves to is allowed (a name that also points inside
        the network is refused whichever address comes first)."""
        # The ASCII (IDNA) form: what DNS, the Host header and the certificate name.
        host = url.raw_host.decode("ascii")
        literal = _literal_address(host)
        addresses: Sequence[IPAddress]
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await self.resolver(host, url.port or _default_port(url.scheme))
            except OSError as exc:
                raise AddressRefused(f"cannot resolve {host}: {exc}") from None
            if not addresses:
                raise AddressRefused(f"{host} resolves to no address")
        for address in addresses:
            why = self.policy.refusal(address)
            if why is not None:
                raise AddressRefused(
                    f"refused: {host} is {address}, inside the server's network ({why}); "
                    "an operator may allow it with TIDINGS_WEBHOOK_ALLOWED_NETWORKS"
                )
        return addresses[0]

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return SendResult(Outcome.RETRY, error="not a URL")
        if parsed.scheme not in ALLOWED_SCHEMES or not parsed.host:
            return SendResult(Outcome.RETRY, error="only http:// and https:// URLs are sent to")
        try:
            address = await self.pinned_address(parsed)
        except AddressRefused as exc:
            return SendResult(Outcome.RETRY, error=str(exc), duration_ms=elapsed())
        host_header = parsed.netloc.decode("ascii").rsplit("@", 1)[-1]
        pinned = parsed.copy_with(host=str(address))
        ascii_host = parsed.raw_host.decode("ascii")
        extensions = {"sni_hostname": ascii_host} if parsed.scheme == "https" else {}
        request_headers = {
            **headers,
            "Host": host_header,
            "Content-Type": "application/json",
            "User-Agent": "Tidings-Webhooks/1",
            # Raw bytes are capped as read; a compressed answer could inflate past the cap.
            "Accept-Encoding": "identity",
        }
        host = parsed.host
        self._in_use[host] = self._in_use.get(host, 0) + 1
        try:
            async with asyncio.timeout(self.timeout_seconds * 2):
                client = self._http(host)
                async with client.stream(
                    "POST", pinned, headers=request_headers, content=body, extensions=extensions
                ) as response:
                    data = bytearray()
                    async for chunk in response.aiter_raw():
                        data += chunk
                        if len(data) >= self.max_response_bytes:
                            break
        except TimeoutError:
            return SendResult(Outcome.RETRY, error="timed out", duration_ms=elapsed())
        except httpx.TimeoutException as exc:
            return SendResult(
                Outcome.RETRY, error=f"timed out ({type(exc).__name__})", duration_ms=elapsed()
            )
        except httpx.HTTPError as exc:
            return SendResult(
                Outcome.RETRY,
                error=f"connection failed: {type(exc).__name__}: {exc}"[:500],
                duration_ms=elapsed(),
            )
        finally:
            self._in_use[host] -= 1
            if not self._in_use[host]:
                del self._in_use[host]
        snippet = bytes(data[:RESPONSE_SNIPPET_CHARS]).decode("utf-8", "replace")
        return SendResult.of_status(response.status_code, snippet or None, elapsed())

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True, slots=True)
class SentRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingSender:
    """The test double: records every request and answers from a script (status codes,
    or SendResults), then 200s. Applies the same address policy to literal addresses."""

    answers: list[int | SendResult] = field(default_factory=list)
    policy: AddressPolicy | None = None
    sent: list[SentRequest] = field(default_factory=list)
    closed: bool = False

    def script(self, answers: Iterable[int | SendResult]) -> None:
        self.answers.extend(answers)

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        if self.policy is not None:
            literal = _literal_address(httpx.URL(url).host)
            why = self.policy.refusal(literal) if literal is not None else None
            if why is not None:
                return SendResult(Outcome.RETRY, error=f"refused: {why}")
        self.sent.append(SentRequest(url, dict(headers), body))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, SendResult):
            return answer
        return SendResult.of_status(answer, None, 0)

    async def close(self) -> None:
        self.closed = True
