"""Server discovery: IP literals, ports, .well-known (with caching), SRV and DNS packets."""

from __future__ import annotations

import asyncio
import random
import struct

import aiohttp
import dns.message
import dns.rdatatype
import pytest
from aiohttp import web

from federation.discovery import (
    AiohttpWellKnownFetcher,
    DnsError,
    ResolvedServer,
    ServerDiscovery,
    SrvRecord,
    SrvResolver,
    cache_period,
    order_srv_records,
)

# A hand-assembled answer for _matrix-fed._tcp.example.org with two SRV records, the
# first target compressed against the question name ("matrix" + pointer to "example").
QUESTION = b"\x0b_matrix-fed\x04_tcp\x07example\x03org\x00\x00\x21\x00\x01"
ANSWER = (
    b"\x12\x34\x81\x80\x00\x01\x00\x02\x00\x00\x00\x00"
    + QUESTION
    + b"\xc0\x0c\x00\x21\x00\x01\x00\x00\x0e\x10\x00\x0f"
    + b"\x00\x0a\x00\x05\x20\xfb\x06matrix\xc0\x1d"
    + b"\xc0\x0c\x00\x21\x00\x01\x00\x00\x01\x2c\x00\x1a"
    + b"\x00\x14\x00\x00\x21\x00\x06backup\x07example\x03org\x00"
)
# Records of one RRset share its TTL (the smallest of the answer's, 300 s).
EXPECTED = [
    SrvRecord(10, 5, 8443, "matrix.example.org", 300),
    SrvRecord(20, 0, 8448, "backup.example.org", 300),
]


def test_order_srv_records() -> None:
    recs = [
        SrvRecord(20, 0, 1, "c"),
        SrvRecord(10, 0, 2, "a"),
        SrvRecord(10, 100, 3, "b"),
    ]
    seen_first = set()
    for seed in range(30):
        ordered = order_srv_records(recs, random.Random(seed))
        assert ordered[-1].target == "c"
        seen_first.add(ordered[0].target)
    # weight 100 vs 0: "b" essentially always first, but "a" still included
    assert seen_first == {"b"}
    assert order_srv_records([SrvRecord(0, 0, 0, ".")]) == []


class FakeDns(asyncio.DatagramProtocol):
    def __init__(self, truncate: bool = False) -> None:
        self.truncate = truncate
        self.nxdomain = False
        self.queries: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.queries.append(data)
        if self.nxdomain:
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            reply.set_rcode(3)  # NXDOMAIN
            self.transport.sendto(reply.to_wire(), addr)
        elif self.truncate:
            # TC bit set, no answers: the client must retry over TCP.
            self.transport.sendto(
                data[:2] + b"\x83\x80\x00\x01\x00\x00\x00\x00\x00\x00" + QUESTION, addr
            )
        else:
            self.transport.sendto(data[:2] + ANSWER[2:], addr)


async def _dns_servers(truncate: bool):
    """A fake DNS server on one port over UDP and TCP. TCP is bound first: a busy suite
    leaves thousands of TCP sockets on ephemeral ports, so a free UDP port is often
    taken on TCP, while the reverse collision is rare."""
    loop = asyncio.get_running_loop()

    async def tcp(reader, writer):
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        q = await reader.readexactly(n)
        reply = q[:2] + ANSWER[2:]
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
        writer.close()

    tcp_server = await asyncio.start_server(tcp, "127.0.0.1", 0)
    port = tcp_server.sockets[0].getsockname()[1]
    transport, proto = await loop.create_datagram_endpoint(
        lambda: FakeDns(truncate), local_addr=("127.0.0.1", port)
    )
    return transport, proto, tcp_server, port


@pytest.mark.parametrize("truncate", [False, True])
async def test_srv_resolver_over_udp_and_tcp(truncate: bool) -> None:
    transport, proto, tcp_server, port = await _dns_servers(truncate)
    try:
        resolver = SrvResolver(["127.0.0.1"], port=port, timeout=2)
        records = await resolver.lookup("_matrix-fed._tcp.example.org")
        assert records == EXPECTED
        (question,) = dns.message.from_wire(proto.queries[0]).question
        assert question.name.to_text() == "_matrix-fed._tcp.example.org."
        assert question.rdtype == dns.rdatatype.SRV
        # cached by TTL: no second query
        assert await resolver.lookup("_matrix-fed._tcp.example.org") == EXPECTED
        assert len(proto.queries) == 1
    finally:
        transport.close()
        tcp_server.close()


async def test_srv_resolver_nxdomain_is_no_records_and_the_cache_is_bounded() -> None:
    transport, proto, tcp_server, port = await _dns_servers(False)
    proto.nxdomain = True
    try:
        resolver = SrvResolver(["127.0.0.1"], port=port, timeout=2, max_cached=2)
        for name in ("_a._tcp.example.org", "_b._tcp.example.org", "_c._tcp.example.org"):
            assert await resolver.lookup(name) == []
        assert len(proto.queries) == 3
        await resolver.lookup("_c._tcp.example.org")  # cached (NXDOMAIN is remembered)
        assert len(proto.queries) == 3
        await resolver.lookup("_a._tcp.example.org")  # evicted: asked again
        assert len(proto.queries) == 4
        ids = {struct.unpack("!H", q[:2])[0] for q in proto.queries}
        assert len(ids) > 1  # fresh random query IDs
    finally:
        transport.close()
        tcp_server.close()


async def test_srv_resolver_times_out_into_dns_error() -> None:
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = silent.get_extra_info("sockname")[1]
    try:
        with pytest.raises(DnsError):
            await SrvResolver(["127.0.0.1"], port=port, timeout=0.2).lookup("_x._tcp.example.org")
    finally:
        silent.close()


class FakeSrv:
    def __init__(self, answers: dict[str, list[SrvRecord]] | None = None, fail: bool = False):
        self.answers = answers or {}
        self.fail = fail
        self.lookups: list[str] = []

    async def lookup(self, name: str) -> list[SrvRecord]:
        self.lookups.append(name)
        if self.fail:
            raise DnsError("boom")
        return self.answers.get(name, [])


class NoWellKnown:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, url: str):
        self.calls += 1
        raise ConnectionError("no")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.2.3.4", ResolvedServer("1.2.3.4", 8448, "1.2.3.4", None)),
        ("1.2.3.4:8481", ResolvedServer("1.2.3.4", 8481, "1.2.3.4:8481", None)),
        ("[::1]:8481", ResolvedServer("::1", 8481, "[::1]:8481", None)),
        ("[2001:db8::1]", ResolvedServer("2001:db8::1", 8448, "[2001:db8::1]", None)),
        (
            "example.org:1234",
            ResolvedServer("example.org", 1234, "example.org:1234", "example.org"),
        ),
    ],
)
async def test_literal_and_explicit_port(name: str, expected: ResolvedServer) -> None:
    wk = NoWellKnown()
    srv = FakeSrv()
    d = ServerDiscovery(well_known_fetcher=wk, srv_resolver=srv)
    assert await d.resolve(name) == expected
    assert wk.calls == 0 and srv.lookups == []


def test_base_url_brackets_ipv6() -> None:
    assert ResolvedServer("::1", 8448, "[::1]", None).base_url == "https://[::1]:8448"
    assert ResolvedServer("1.2.3.4", 8, "x", None).base_url == "https://1.2.3.4:8"


async def test_bad_server_name_raises_value_error() -> None:
    d = ServerDiscovery(well_known_fetcher=NoWellKnown(), srv_resolver=FakeSrv())
    for bad in ("", "exa mple.org", "example.org:99999", "[::1"):
        with pytest.raises(ValueError):
            await d.resolve(bad)


async def test_srv_without_well_known() -> None:
    srv = FakeSrv({"_matrix-fed._tcp.example.org": [SrvRecord(1, 1, 8443, "fed.example.org.")]})
    d = ServerDiscovery(well_known_fetcher=NoWellKnown(), srv_resolver=srv)
    assert await d.resolve("example.org") == ResolvedServer(
        "fed.example.org", 8443, "example.org", "example.org"
    )
    srv2 = FakeSrv({"_matrix._tcp.example.org": [SrvRecord(1, 1, 9000, "old.example.org")]})
    d2 = ServerDiscovery(well_known_fetcher=NoWellKnown(), srv_resolver=srv2)
    assert await d2.resolve("example.org") == ResolvedServer(
        "old.example.org", 9000, "example.org", "example.org"
    )
    assert srv2.lookups == ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]


async def test_default_port_when_nothing_found_or_dns_fails() -> None:
    for srv in (FakeSrv(), FakeSrv(fail=True)):
        d = ServerDiscovery(well_known_fetcher=NoWellKnown(), srv_resolver=srv)
        assert await d.resolve("example.org") == ResolvedServer(
            "example.org", 8448, "example.org", "example.org"
        )


# ----------------------------------------------------------------- .well-known over HTTP


class WellKnownApp:
    """A local HTTP server answering /<host>/.well-known/matrix/server as configured."""

    def __init__(self) -> None:
        self.responses: dict[str, web.Response] = {}
        self.hits: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"]
        self.hits[host] = self.hits.get(host, 0) + 1
        factory = self.responses.get(host)
        if factory is None:
            return web.Response(status=404)
        result = factory()
        if isinstance(result, web.HTTPException):
            raise result
        if asyncio.iscoroutine(result):
            result = await result
        return result


@pytest.fixture
async def wk(aiohttp_server):
    state = WellKnownApp()
    app = web.Application()
    app.router.add_get("/{host}/.well-known/matrix/server", state.handle)

    async def target(_request: web.Request) -> web.Response:
        return web.json_response({"m.server": "moved.example:443"})

    app.router.add_get("/redirect-target", target)
    server = await aiohttp_server(app)
    session = aiohttp.ClientSession()
    clock = {"now": 1_000_000.0}
    srv = FakeSrv({"_matrix-fed._tcp.deleg.example": [SrvRecord(0, 0, 7777, "box.deleg.example")]})
    disc = ServerDiscovery(
        well_known_fetcher=AiohttpWellKnownFetcher(lambda: session),
        srv_resolver=srv,
        clock=lambda: clock["now"],
        well_known_url=lambda host: (
            f"http://127.0.0.1:{server.port}/{host}/.well-known/matrix/server"
        ),
    )
    yield state, disc, clock, server
    await session.close()


def _json(body: object, headers: dict | None = None):
    return lambda: web.json_response(body, headers=headers)


async def test_well_known_delegation_variants(wk) -> None:
    state, disc, _, _ = wk
    state.responses["a.example"] = _json({"m.server": "10.1.2.3:8449"})
    state.responses["b.example"] = _json({"m.server": "matrix.b.example:443"})
    state.responses["c.example"] = _json({"m.server": "deleg.example"})
    state.responses["d.example"] = _json({"m.server": "plain.example"})
    state.responses["e.example"] = _json({"m.server": "[::1]"})
    assert await disc.resolve("a.example") == ResolvedServer(
        "10.1.2.3", 8449, "10.1.2.3:8449", None
    )
    assert await disc.resolve("b.example") == ResolvedServer(
        "matrix.b.example", 443, "matrix.b.example:443", "matrix.b.example"
    )
    assert await disc.resolve("c.example") == ResolvedServer(
        "box.deleg.example", 7777, "deleg.example", "deleg.example"
    )
    assert await disc.resolve("d.example") == ResolvedServer(
        "plain.example", 8448, "plain.example", "plain.example"
    )
    assert await disc.resolve("e.example") == ResolvedServer("::1", 8448, "[::1]", None)


@pytest.mark.parametrize(
    "response",
    [
        lambda: web.Response(text="not json", content_type="application/json"),
        lambda: web.json_response({"m.server": 5}),
        lambda: web.json_response({"m.server": "bad host!"}),
        lambda: web.json_response(["m.server"]),
        lambda: web.json_response({"m.server": "x.example"}, status=500),
        lambda: web.Response(body=b"{" + b" " * 60000 + b"}", content_type="application/json"),
    ],
)
async def test_bad_well_known_falls_back_and_is_cached_one_hour(wk, response) -> None:
    state, disc, clock, _ = wk
    state.responses["bad.example"] = response
    assert await disc.resolve("bad.example") == ResolvedServer(
        "bad.example", 8448, "bad.example", "bad.example"
    )
    assert disc.well_known_cache_expiry("bad.example") == clock["now"] + 3600
    await disc.resolve("bad.example")
    assert state.hits["bad.example"] == 1
    clock["now"] += 3601
    await disc.resolve("bad.example")
    assert state.hits["bad.example"] == 2


@pytest.mark.parametrize(
    ("headers", "period"),
    [
        (None, 24 * 3600),
        ({"Cache-Control": "max-age=7200"}, 7200),
        ({"Cache-Control": "public, max-age=999999999"}, 48 * 3600),
        ({"Cache-Control": "no-cache"}, 300),
        ({"Cache-Control": "max-age=10"}, 300),
        ({"Expires": "Thu, 01 Jan 1970 03:00:00 GMT"}, None),  # relative to the fake clock
    ],
)
async def test_well_known_cache_headers(wk, headers, period) -> None:
    state, disc, clock, _ = wk
    state.responses["c.example"] = _json({"m.server": "deleg.example"}, headers)
    await disc.resolve("c.example")
    expiry = disc.well_known_cache_expiry("c.example")
    if period is None:
        # Expires = 10800 s after epoch, clock at 1e6 s: already past -> minimum 5 min
        assert expiry == clock["now"] + 300
    else:
        assert expiry == clock["now"] + period
    clock["now"] = expiry - 1
    await disc.resolve("c.example")
    assert state.hits["c.example"] == 1
    clock["now"] = expiry + 1
    await disc.resolve("c.example")
    assert state.hits["c.example"] == 2


def test_cache_period_expires_header() -> None:
    assert cache_period({"expires": "Thu, 01 Jan 1970 10:00:00 GMT"}, 0) == 36000
    assert cache_period({"Expires": "garbage"}, 0) == 300


async def test_well_known_redirect_followed_and_loop_rejected(wk) -> None:
    state, disc, _, server = wk
    state.responses["r.example"] = lambda: web.HTTPFound(
        f"http://127.0.0.1:{server.port}/redirect-target"
    )
    state.responses["loop.example"] = lambda: web.HTTPFound(
        f"http://127.0.0.1:{server.port}/loop.example/.well-known/matrix/server"
    )
    assert await disc.resolve("r.example") == ResolvedServer(
        "moved.example", 443, "moved.example:443", "moved.example"
    )
    assert (await disc.resolve("loop.example")).port == 8448
    assert 2 <= state.hits["loop.example"] <= 7


async def test_concurrent_well_known_lookups_share_one_request(wk) -> None:
    state, disc, _, _ = wk

    async def slow():
        await asyncio.sleep(0.05)
        return web.json_response({"m.server": "deleg.example"})

    state.responses["slow.example"] = slow
    results = await asyncio.gather(*(disc.well_known("slow.example") for _ in range(5)))
    assert results == ["deleg.example"] * 5
    assert state.hits["slow.example"] == 1
