"""Outbound IP range policy: what addresses we may connect to (federation, URL previews).

A homeserver fetches URLs that remote parties choose (server names, .well-known
delegation, SRV targets), so without a policy anyone could make it probe the loopback
interface or the private network it sits in (SSRF). Every address we are about to
connect to is checked here: the client checks IP literals itself, and everything else
is resolved through `FilteringResolver`, so a blocked host fails before any connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from homeserver.config import DEFAULT_IP_RANGE_BLACKLIST as CONFIG_DEFAULT_IP_RANGE_BLACKLIST

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The configuration's default (Synapse's list: loopback, private, link-local, shared,
# documentation, benchmarking and multicast ranges) plus the reserved 240.0.0.0/4, for
# filters built without a configuration. Kept in one place so the two cannot drift.
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (*CONFIG_DEFAULT_IP_RANGE_BLACKLIST, "240.0.0.0/4")

# Never reachable as a destination, whatever the configuration says.
_ALWAYS_BLOCKED: tuple[str, ...] = ("0.0.0.0/8", "::/128")


class IPBlockedError(OSError):
    """Raised instead of connecting to an address the policy forbids."""


def _networks(ranges: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(r, strict=False) for r in ranges)


class IPFilter:
    """Decides whether an address may be connected to.

    An address is blocked if it lies in a blacklisted range and in no whitelisted one.
    IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged as the IPv4 address they
    carry, so a blacklist written in IPv4 cannot be bypassed through IPv6 notation.
    """

    def __init__(
        self,
        blacklist: Iterable[str] = DEFAULT_IP_RANGE_BLACKLIST,
        whitelist: Iterable[str] = (),
    ) -> None:
        self.blacklist = _networks(blacklist) + _networks(_ALWAYS_BLOCKED)
        self.whitelist = _networks(whitelist)

    @staticmethod
    def _candidates(ip: str | IPAddress) -> list[IPAddress]:
        addr = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
        out: list[IPAddress] = [addr]
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            out.append(addr.ipv4_mapped)
        return out

    def is_allowed(self, ip: str | IPAddress) -> bool:
        """True if connecting to `ip` is permitted; ValueError if it is not an address."""
        for addr in self._candidates(ip):
            blocked = any(addr.version == n.version and addr in n for n in self.blacklist)
            allowed = any(addr.version == n.version and addr in n for n in self.whitelist)
            if blocked and not allowed:
                return False
        return True

    def check(self, ip: str | IPAddress, host: str | None = None) -> None:
        """Raise IPBlockedError if `ip` is not allowed (`host` only for the message)."""
        if not self.is_allowed(ip):
            label = f"{host} ({ip})" if host and host != str(ip) else str(ip)
            raise IPBlockedError(f"connection to {label} is blocked by ip_range_blacklist")


def outbound_ip_filter(federation: Any) -> IPFilter:
    """The IP policy for every connection a stranger can make us open (federation,
    pushers, identity servers): `ip_range_blacklist` / `ip_range_whitelist` of the
    config's federation section (homeserver.config.FederationConfig)."""
    return IPFilter(
        blacklist=[str(n) for n in federation.ip_range_blacklist],
        whitelist=[str(n) for n in federation.ip_range_whitelist],
    )


def is_ip_literal(host: str) -> bool:
    """True for `1.2.3.4`, `::1` or `[::1]`."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


class FilteringResolver(AbstractResolver):
    """An aiohttp resolver that drops addresses the IP filter blocks.

    If every address of a name is blocked the lookup fails with IPBlockedError, which
    aiohttp reports as a connection error: the socket is never opened.
    """

    def __init__(self, ip_filter: IPFilter, inner: AbstractResolver | None = None) -> None:
        self._filter = ip_filter
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._filter.is_allowed(r["host"])]
        if not allowed:
            addrs = ", ".join(str(r["host"]) for r in results)
            raise IPBlockedError(f"every address of {host} ({addrs}) is blocked")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def resolver_results(host: str, addresses: Iterable[str], port: int) -> list[Any]:
    """Build aiohttp ResolveResult dicts (for fake resolvers in tests and tools)."""
    out = []
    for a in addresses:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        out.append(
            {"hostname": host, "host": a, "port": port, "family": fam, "proto": 0, "flags": 0}
        )
    return out


def ip_literal_guard(ip_filter: IPFilter) -> Any:
    """An aiohttp TraceConfig refusing requests to blocked IP literals.

    aiohttp never hands IP-literal hosts to the resolver, so `FilteringResolver` alone
    would let a redirect (e.g. a hostile `.well-known` answering 302 to
    `https://127.0.0.1/`) reach a blocked address. The trace checks the first URL and
    every redirect target, raising IPBlockedError before any connection is made.
    """
    import aiohttp
    from yarl import URL

    def check_url(url: Any) -> None:
        host = url.host or ""
        if is_ip_literal(host):
            ip_filter.check(host.strip("[]"), host)

    async def on_request_start(_session: Any, _ctx: Any, params: Any) -> None:
        check_url(params.url)

    async def on_request_redirect(_session: Any, _ctx: Any, params: Any) -> None:
        # Runs before aiohttp follows the redirect (on_request_start does not run again).
        location = params.response.headers.get("Location") or params.response.headers.get("URI")
        if location:
            check_url(params.url.join(URL(location)))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    trace.on_request_redirect.append(on_request_redirect)
    return trace
