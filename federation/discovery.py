"""Server discovery: turn a server name into where and how to connect.

Follows the spec's resolution order (server-server API: resolving server names):

1. IP literal: connect to it, given port or 8448; Host header is the server name; no SNI.
2. Hostname with explicit port: connect there; Host header and certificate name are the
   hostname (with port in the Host header).
3. Otherwise GET https://<hostname>/.well-known/matrix/server; if it names a delegated
   server, apply 3.1 IP literal / 3.2 explicit port / 3.3 SRV `_matrix-fed._tcp` /
   3.4 SRV `_matrix._tcp` / 3.5 port 8448 to the delegated name, which then becomes
   the Host header and certificate name.
4./5. No usable .well-known: SRV `_matrix-fed._tcp`, then `_matrix._tcp`, for the name.
6. Fall back to <hostname>:8448.

SRV records are fetched with dnspython's asyncio resolver (nameservers from
/etc/resolv.conf); `SrvResolver` is the interface the rest of discovery uses.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from homeserver.ids import split_server_name

log = logging.getLogger(__name__)

DEFAULT_FEDERATION_PORT = 8448

WELL_KNOWN_DEFAULT_CACHE_S = 24 * 3600
WELL_KNOWN_MIN_CACHE_S = 5 * 60
WELL_KNOWN_MAX_CACHE_S = 48 * 3600
WELL_KNOWN_ERROR_CACHE_S = 3600
WELL_KNOWN_MAX_BODY = 50 * 1024
WELL_KNOWN_MAX_REDIRECTS = 5
WELL_KNOWN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    """Where to connect for a server name and what to present once connected.

    `host` is an IP address (no brackets) or a hostname the connector still resolves;
    `tls_server_name` is the name sent as SNI and checked against the certificate, or
    None for IP literals (SNI cannot carry an IP; the certificate must cover the IP).
    """

    host: str
    port: int
    host_header: str
    tls_server_name: str | None

    @property
    def url_host(self) -> str:
        """`host` as it goes into a URL authority (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def base_url(self) -> str:
        return f"https://{self.url_host}:{self.port}"


def _ip_literal(host: str) -> str | None:
    """The bare address if `host` (as split by split_server_name) is an IP literal."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


# --------------------------------------------------------------------------- DNS (SRV)

SRV_MIN_TTL_S = 60
SRV_MAX_TTL_S = 3600
SRV_NEGATIVE_TTL_S = 300
# Bound on the SRV cache: names looked up for any server a peer makes us talk to.
SRV_MAX_CACHED_NAMES = 10_000


class DnsError(Exception):
    """The lookup failed (timeout, SERVFAIL, malformed answer): not the same as 'no records'."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str
    ttl: int = 0


def order_srv_records(
    records: Sequence[SrvRecord], rng: random.Random | None = None
) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority, weighted random within a priority.

    A single record with target "." means the service is explicitly not offered.
    """
    if len(records) == 1 and records[0].target in ("", "."):
        return []
    rng = rng or random.Random()
    out: list[SrvRecord] = []
    for prio in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == prio and r.target not in ("", ".")]
        while group:
            total = sum(r.weight for r in group)
            pick = group[0]
            if total:
                point = rng.randint(1, total)
                running = 0
                for r in group:
                    running += r.weight
                    if running >= point:
                        pick = r
                        break
            out.append(pick)
            group.remove(pick)
    return out


def _system_resolver() -> dns.asyncresolver.Resolver:
    """dnspython's resolver over /etc/resolv.conf (127.0.0.1 when there is none)."""
    try:
        return dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        return resolver


class SrvResolver:
    """SRV look-ups through dnspython's asyncio resolver (query IDs from its secure
    random source, truncated UDP answers retried over TCP). Answers are cached by their
    TTL clamped to [1 min, 1 h] (absent records for 5 min), at most
    `SRV_MAX_CACHED_NAMES` names, least recently used evicted first."""

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = SRV_MAX_CACHED_NAMES,
    ) -> None:
        if nameservers is None:
            self._resolver = _system_resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        # Per nameserver, and in total one try of each: the federation request waits.
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout * max(1, len(self._resolver.nameservers))
        self._clock = clock
        self._max_cached = max_cached
        self._cache: OrderedDict[str, tuple[float, list[SrvRecord]]] = OrderedDict()

    @property
    def nameservers(self) -> list[str]:
        return [str(ns) for ns in self._resolver.nameservers]

    async def lookup(self, name: str) -> list[SrvRecord]:
        """SRV records of `name` ([] if none exist); DnsError if no server answered."""
        cached = self._cache.get(name)
        if cached is not None and cached[0] > self._clock():
            self._cache.move_to_end(name)
            return cached[1]
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(name), "SRV", raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return self._remember(name, [], SRV_NEGATIVE_TTL_S)
        except (dns.exception.DNSException, ValueError, OSError) as e:
            raise DnsError(f"SRV lookup for {name} failed: {e!r}") from None
        if answer.rrset is None:
            return self._remember(name, [], SRV_NEGATIVE_TTL_S)
        ttl = answer.rrset.ttl
        records = [
            SrvRecord(r.priority, r.weight, r.port, _target_text(r.target), ttl)
            for r in answer.rrset
        ]
        return self._remember(name, records, min(max(ttl, SRV_MIN_TTL_S), SRV_MAX_TTL_S))

    def _remember(self, name: str, records: list[SrvRecord], ttl: float) -> list[SrvRecord]:
        self._cache[name] = (self._clock() + ttl, records)
        self._cache.move_to_end(name)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return records


def _target_text(target: dns.name.Name) -> str:
    """An SRV target as a hostname without the final dot ("." for the root name)."""
    if target == dns.name.root:
        return "."
    return target.to_text(omit_final_dot=True)


# --------------------------------------------------------------------------- .well-known


@dataclass(frozen=True, slots=True)
class WellKnownResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class WellKnownFetcher(Protocol):
    """GETs a .well-known URL, following a bounded number of redirects."""

    async def __call__(self, url: str) -> WellKnownResponse: ...


class AiohttpWellKnownFetcher:
    """Fetches .well-known over an aiohttp session (the federation client's, so that the
    same TLS trust and IP range policy apply)."""

    def __init__(self, session: Callable[[], object], timeout: float = WELL_KNOWN_TIMEOUT_S):
        self._session = session
        self._timeout = timeout

    async def __call__(self, url: str) -> WellKnownResponse:
        import aiohttp

        session = self._session()
        assert isinstance(session, aiohttp.ClientSession)
        async with session.get(
            url,
            allow_redirects=True,
            max_redirects=WELL_KNOWN_MAX_REDIRECTS,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        ) as resp:
            body = await resp.content.read(WELL_KNOWN_MAX_BODY + 1)
            if len(body) > WELL_KNOWN_MAX_BODY:
                raise ValueError("well-known response too large")
            return WellKnownResponse(resp.status, dict(resp.headers), body)


def cache_period(headers: Mapping[str, str], now: float) -> float:
    """Seconds to cache a good .well-known response, from Cache-Control or Expires.

    Default 24 h without headers; clamped to [5 min, 48 h] so that neither a
    `no-cache` nor a huge max-age makes us hammer or pin a peer.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    period: float | None = None
    cc = lower.get("cache-control")
    if cc:
        directives = [d.strip().lower() for d in cc.split(",")]
        if "no-store" in directives or "no-cache" in directives:
            period = 0
        else:
            for d in directives:
                value = d.removeprefix("max-age=")
                if value != d and value.strip('"').isdigit():
                    period = int(value.strip('"'))
    if period is None and "expires" in lower:
        try:
            expires = email.utils.parsedate_to_datetime(lower["expires"]).timestamp()
            period = expires - now
        except (TypeError, ValueError, IndexError):
            period = 0
    if period is None:
        period = WELL_KNOWN_DEFAULT_CACHE_S
    return float(min(max(period, WELL_KNOWN_MIN_CACHE_S), WELL_KNOWN_MAX_CACHE_S))


def parse_well_known(body: bytes) -> str:
    """The validated `m.server` value of a .well-known/matrix/server body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("well-known body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("m.server"), str):
        raise ValueError("well-known body has no m.server string")
    server = doc["m.server"]
    split_server_name(server)
    return server


def default_well_known_url(hostname: str) -> str:
    return f"https://{hostname}/.well-known/matrix/server"


# --------------------------------------------------------------------------- resolution


class ServerDiscovery:
    """Resolves server names to connection targets, caching .well-known results.

    `well_known_fetcher` may be left None and installed later (the federation client
    does this with its own session). `well_known_url` exists so tests can point the
    lookup at a local server.
    """

    def __init__(
        self,
        *,
        well_known_fetcher: WellKnownFetcher | None = None,
        srv_resolver: SrvResolver | None = None,
        clock: Callable[[], float] = time.time,
        well_known_url: Callable[[str], str] = default_well_known_url,
    ) -> None:
        self.well_known_fetcher = well_known_fetcher
        self.srv_resolver = srv_resolver or SrvResolver()
        self._clock = clock
        self._well_known_url = well_known_url
        self._well_known_cache: dict[str, tuple[float, str | None]] = {}
        self._inflight: dict[str, asyncio.Task[str | None]] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        """The first connection target for `server_name` (ValueError if the name is bad)."""
        return (await self.resolve_all(server_name))[0]

    async def resolve_all(self, server_name: str) -> list[ResolvedServer]:
        """All connection targets in preference order (several only with SRV)."""
        host, port = split_server_name(server_name)
        ip = _ip_literal(host)
        if ip is not None:
            return [ResolvedServer(ip, port or DEFAULT_FEDERATION_PORT, server_name, None)]
        if port is not None:
            return [ResolvedServer(host, port, server_name, host)]
        delegated = await self.well_known(host)
        if delegated is not None:
            d_host, d_port = split_server_name(delegated)
            d_ip = _ip_literal(d_host)
            if d_ip is not None:
                return [ResolvedServer(d_ip, d_port or DEFAULT_FEDERATION_PORT, delegated, None)]
            if d_port is not None:
                return [ResolvedServer(d_host, d_port, delegated, d_host)]
            return await self._srv_or_default(d_host)
        return await self._srv_or_default(host)

    async def _srv_or_default(self, hostname: str) -> list[ResolvedServer]:
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            try:
                records = await self.srv_resolver.lookup(f"{service}.{hostname}")
            except DnsError as e:
                log.info("SRV lookup failed, trying the next step: %s", e)
                continue
            ordered = order_srv_records(records)
            if ordered:
                return [
                    ResolvedServer(r.target.rstrip("."), r.port, hostname, hostname)
                    for r in ordered
                ]
        return [ResolvedServer(hostname, DEFAULT_FEDERATION_PORT, hostname, hostname)]

    async def well_known(self, hostname: str) -> str | None:
        """The delegated server name from .well-known, or None; cached per the spec.

        Concurrent callers for the same host share one fetch.
        """
        now = self._clock()
        cached = self._well_known_cache.get(hostname)
        if cached and cached[0] > now:
            return cached[1]
        task = self._inflight.get(hostname)
        if task is None:
            task = asyncio.ensure_future(self._fetch_well_known(hostname))
            self._inflight[hostname] = task
            task.add_done_callback(lambda _t: self._inflight.pop(hostname, None))
        return await asyncio.shield(task)

    async def _fetch_well_known(self, hostname: str) -> str | None:
        if self.well_known_fetcher is None:
            raise RuntimeError("ServerDiscovery has no well-known fetcher")
        try:
            resp = await self.well_known_fetcher(self._well_known_url(hostname))
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            server = parse_well_known(resp.body)
        except Exception as e:  # any failure means "no delegation", cached for an hour
            log.info("no usable .well-known for %s: %s", hostname, e)
            self._well_known_cache[hostname] = (self._clock() + WELL_KNOWN_ERROR_CACHE_S, None)
            return None
        period = cache_period(resp.headers, self._clock())
        self._well_known_cache[hostname] = (self._clock() + period, server)
        return server

    def well_known_cache_expiry(self, hostname: str) -> float | None:
        """When the cached .well-known answer for `hostname` expires (introspection)."""
        entry = self._well_known_cache.get(hostname)
        return entry[0] if entry else None
