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

SRV records are fetched with a minimal DNS client over UDP (TCP on truncation) that reads
its nameservers from /etc/resolv.conf, because the project takes no DNS dependency.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import random
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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

DNS_TYPE_SRV = 33
DNS_CLASS_IN = 1
RCODE_NXDOMAIN = 3


class DnsError(Exception):
    """The lookup failed (timeout, SERVFAIL, malformed answer): not the same as 'no records'."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str
    ttl: int = 0


def encode_dns_name(name: str) -> bytes:
    """Encode a domain name as DNS labels (IDNA for non-ASCII labels)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii") if label.isascii() else label.encode("idna")
        if not 0 < len(raw) < 64:
            raise ValueError(f"invalid DNS label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("DNS name too long")
    return bytes(out)


def encode_srv_query(name: str, txid: int) -> bytes:
    """A standard recursive query for the SRV records of `name`."""
    header = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    return header + encode_dns_name(name) + struct.pack("!HH", DNS_TYPE_SRV, DNS_CLASS_IN)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Decode a possibly compressed name; return it and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    while True:
        if offset >= len(data):
            raise DnsError("name runs past end of message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DnsError("truncated compression pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            if jumps > 64:
                raise DnsError("compression pointer loop")
            continue
        if length & 0xC0:
            raise DnsError("unsupported label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DnsError("label runs past end of message")
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


@dataclass(frozen=True, slots=True)
class DnsResponse:
    txid: int
    truncated: bool
    rcode: int
    records: list[SrvRecord]


def parse_srv_response(data: bytes) -> DnsResponse:
    """Parse a DNS response, keeping only the SRV answers."""
    if len(data) < 12:
        raise DnsError("DNS message shorter than its header")
    txid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if not flags & 0x8000:
        raise DnsError("DNS message is not a response")
    offset = 12
    for _ in range(qd):
        _, offset = _read_name(data, offset)
        offset += 4
    records: list[SrvRecord] = []
    for _ in range(an):
        _, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise DnsError("truncated resource record")
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata_end = offset + rdlen
        if rdata_end > len(data):
            raise DnsError("resource data runs past end of message")
        if rtype == DNS_TYPE_SRV and rclass == DNS_CLASS_IN:
            if rdlen < 7:
                raise DnsError("SRV record too short")
            prio, weight, port = struct.unpack("!HHH", data[offset : offset + 6])
            target, _ = _read_name(data, offset + 6)
            records.append(SrvRecord(prio, weight, port, target, ttl))
        offset = rdata_end
    return DnsResponse(txid, bool(flags & 0x0200), flags & 0x000F, records)


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
            if total == 0:
                pick = group[0]
            else:
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


def read_resolv_conf(path: str = "/etc/resolv.conf") -> list[str]:
    """Nameserver addresses from resolv.conf; 127.0.0.1 if none are listed."""
    servers: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append(parts[1])
    except OSError:
        pass
    return servers or ["127.0.0.1"]


class _UdpQuery(asyncio.DatagramProtocol):
    def __init__(self, txid: int) -> None:
        self.txid = txid
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if (
            len(data) >= 2
            and struct.unpack("!H", data[:2])[0] == self.txid
            and not self.done.done()
        ):
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class SrvResolver:
    """Looks up SRV records with a minimal stub resolver; caches answers by TTL."""

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nameservers = list(nameservers) if nameservers is not None else read_resolv_conf()
        self.port = port
        self.timeout = timeout
        self._clock = clock
        self._cache: dict[str, tuple[float, list[SrvRecord]]] = {}

    async def lookup(self, name: str) -> list[SrvRecord]:
        """SRV records of `name` ([] if none exist); DnsError if no server answered."""
        cached = self._cache.get(name)
        if cached and cached[0] > self._clock():
            return cached[1]
        query_error: Exception | None = None
        for ns in self.nameservers:
            try:
                resp = await self._query(ns, name)
            except (OSError, TimeoutError, DnsError) as e:
                query_error = e
                continue
            if resp.rcode == RCODE_NXDOMAIN or (resp.rcode == 0 and not resp.records):
                self._cache[name] = (self._clock() + 300, [])
                return []
            if resp.rcode != 0:
                query_error = DnsError(f"DNS rcode {resp.rcode} for {name}")
                continue
            ttl = min(max(min(r.ttl for r in resp.records), 60), 3600)
            self._cache[name] = (self._clock() + ttl, resp.records)
            return resp.records
        raise DnsError(f"SRV lookup for {name} failed: {query_error}")

    async def _query(self, nameserver: str, name: str) -> DnsResponse:
        txid = random.randrange(0x10000)
        packet = encode_srv_query(name, txid)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _UdpQuery(txid), remote_addr=(nameserver, self.port)
        )
        try:
            transport.sendto(packet)
            data = await asyncio.wait_for(proto.done, self.timeout)
        finally:
            transport.close()
        resp = parse_srv_response(data)
        if resp.truncated:
            resp = await self._query_tcp(nameserver, packet)
        return resp

    async def _query_tcp(self, nameserver: str, packet: bytes) -> DnsResponse:
        async def run() -> bytes:
            reader, writer = await asyncio.open_connection(nameserver, self.port)
            try:
                writer.write(struct.pack("!H", len(packet)) + packet)
                await writer.drain()
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(length)
            finally:
                writer.close()

        return parse_srv_response(await asyncio.wait_for(run(), self.timeout))


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
