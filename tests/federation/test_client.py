"""Outbound client end to end over real TLS, plus the IP range policy."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from federation.auth import parse_x_matrix, verify_request
from federation.client import (
    FederationClient,
    FederationError,
    build_uri,
    encode_query,
    fed_path,
    make_ssl_context,
)
from federation.discovery import ServerDiscovery
from federation.keyring import Keyring, MemoryKeyStore
from homeserver.ipfilter import FilteringResolver, IPBlockedError, IPFilter, resolver_results

OUR_NAME = "origin.test"
EVENT_ID = "$abc/def+ghi:x.y"


# ----------------------------------------------------------------- ip filter


def test_default_blacklist_blocks_private_and_loopback() -> None:
    f = IPFilter()
    for ip in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.1.1",
        "169.254.0.1",
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ):
        assert not f.is_allowed(ip), ip
    for ip in ("8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "172.32.0.1"):
        assert f.is_allowed(ip), ip
    with pytest.raises(IPBlockedError, match="127.0.0.1"):
        f.check("127.0.0.1")
    with pytest.raises(ValueError):
        f.is_allowed("not-an-ip")


def test_whitelist_and_custom_blacklist() -> None:
    f = IPFilter(whitelist=["127.0.0.1/32"])
    assert f.is_allowed("127.0.0.1")
    assert f.is_allowed("::ffff:127.0.0.1")
    assert not f.is_allowed("127.0.0.2")
    empty = IPFilter(blacklist=[])
    assert empty.is_allowed("127.0.0.1") and empty.is_allowed("10.0.0.1")
    assert not empty.is_allowed("0.0.0.0") and not empty.is_allowed("::")
    custom = IPFilter(blacklist=["8.8.8.0/24"])
    assert not custom.is_allowed("8.8.8.8") and custom.is_allowed("127.0.0.1")


class FakeResolver(aiohttp.abc.AbstractResolver):
    def __init__(self, addrs: list[str]) -> None:
        self.addrs = addrs

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return resolver_results(host, self.addrs, port)

    async def close(self) -> None:
        pass


async def test_filtering_resolver_drops_blocked_addresses() -> None:
    r = FilteringResolver(IPFilter(), FakeResolver(["10.0.0.1", "8.8.4.4", "::1"]))
    assert [x["host"] for x in await r.resolve("h.example", 443)] == ["8.8.4.4"]
    r2 = FilteringResolver(IPFilter(), FakeResolver(["127.0.0.1", "::1"]))
    with pytest.raises(IPBlockedError, match="h.example"):
        await r2.resolve("h.example", 443)


# ----------------------------------------------------------------- URI building


def test_uri_building() -> None:
    assert fed_path("/_matrix/federation/v1/event/{}", EVENT_ID) == (
        "/_matrix/federation/v1/event/%24abc%2Fdef%2Bghi%3Ax.y"
    )
    assert build_uri(["_matrix", "federation", "v1", "state_ids", "!r:s"], {"event_id": "$e"}) == (
        "/_matrix/federation/v1/state_ids/%21r%3As?event_id=%24e"
    )
    assert encode_query({"ver": ["1", "12"], "limit": 100, "x": True, "s": "a b&c"}) == (
        "ver=1&ver=12&limit=100&x=true&s=a%20b%26c"
    )
    assert encode_query([("v", "$a"), ("v", "$b")]) == "v=%24a&v=%24b"
    assert build_uri("/plain", None) == "/plain"
    with pytest.raises(ValueError):
        build_uri("no-slash")


# ----------------------------------------------------------------- TLS fixtures


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Test Federation CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    _openssl("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return {"ca": d / "ca.crt", "crt": d / "srv.crt", "key": d / "srv.key"}


class Peer:
    """A fake remote homeserver that checks X-Matrix on every request."""

    def __init__(self, our_key) -> None:
        self.verify_key = get_verify_key(our_key)
        self.peer_key = generate_signing_key("peer")
        self.name = ""
        self.seen: list[dict] = []
        self.slow = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        content = json.loads(body) if body else None
        auth = parse_x_matrix(request.headers["Authorization"])
        ok = verify_request(
            auth, request.method, request.raw_path, self.name, content, self.verify_key
        )
        self.seen.append(
            {
                "raw_path": request.raw_path,
                "host": request.headers.get("Host"),
                "auth": auth,
                "ok": ok,
                "content": content,
                "content_type": request.headers.get("Content-Type"),
            }
        )
        if not ok:
            return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "bad sig"}, status=401)
        if self.slow:
            await asyncio.sleep(self.slow)
        path = request.path
        if path == "/_matrix/key/v2/server":
            return web.json_response(self.key_doc())
        if path.startswith("/missing"):
            return web.json_response(
                {"errcode": "M_NOT_FOUND", "error": "no such thing"}, status=404
            )
        if path.startswith("/notjson"):
            return web.Response(text="<html>", content_type="text/html")
        if path.startswith("/crash"):
            return web.Response(text="oops", status=502)
        if path == "/_matrix/key/v2/query/bomb":
            # 1 MiB of gzip that would decode to 1 GiB, sent unasked.
            self.accept_encoding = request.headers.get("Accept-Encoding")
            return web.Response(
                body=GZIP_BOMB,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if path == "/_matrix/key/v2/query/huge":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)  # chunked: no Content-Length to refuse up front
            await resp.write(b'{"server_keys": ["')
            for _ in range(64):
                await resp.write(b"x" * 65536)
            await resp.write(b'"]}')
            return resp
        return web.json_response({"raw_path": request.raw_path, "echo": content})

    def key_doc(self) -> dict:
        vk = base64.b64encode(bytes(get_verify_key(self.peer_key))).decode().rstrip("=")
        doc = {
            "server_name": self.name,
            "valid_until_ts": 2**50,
            "verify_keys": {"ed25519:peer": {"key": vk}},
            "old_verify_keys": {},
        }
        return sign_json(doc, self.name, self.peer_key)


def _gzip_bomb() -> bytes:
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    out = [compressor.compress(chunk) for _ in range(1024)]
    out.append(compressor.flush())
    return b"".join(out)


GZIP_BOMB = _gzip_bomb()


@pytest.fixture
async def peer(aiohttp_server, certs):
    import ssl

    key = generate_signing_key("ours")
    p = Peer(key)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", p.handle)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs["crt"], certs["key"])
    server = await aiohttp_server(app, host="127.0.0.1", ssl=ctx)
    p.name = f"127.0.0.1:{server.port}"
    return p, key, server


def _client(key, certs, **kw) -> FederationClient:
    kw.setdefault("ip_filter", IPFilter(whitelist=["127.0.0.0/8", "::1/128"]))
    kw.setdefault("custom_ca_files", [str(certs["ca"])])
    return FederationClient(OUR_NAME, key, **kw)


async def test_get_with_exact_raw_path_and_valid_signature(peer, certs) -> None:
    p, key, _ = peer
    async with _client(key, certs) as client:
        path = fed_path("/_matrix/federation/v1/event/{}", EVENT_ID)
        res = await client.get_json(p.name, path, query={"ver": ["1", "12"], "x": "$y"})
    raw = "/_matrix/federation/v1/event/%24abc%2Fdef%2Bghi%3Ax.y?ver=1&ver=12&x=%24y"
    assert res == {"raw_path": raw, "echo": None}
    (seen,) = p.seen
    assert seen["ok"] is True
    assert seen["raw_path"] == raw
    assert seen["host"] == p.name
    assert seen["auth"].origin == OUR_NAME and seen["auth"].destination == p.name
    assert seen["auth"].key_id == "ed25519:ours"


async def test_put_and_post_sign_the_body(peer, certs) -> None:
    p, key, _ = peer
    body = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"room_id": "!r:x", "é": 1}}]}
    async with _client(key, certs) as client:
        res = await client.put_json(p.name, ["_matrix", "federation", "v1", "send", "txn/1"], body)
        res2 = await client.post_json(p.name, "/_matrix/federation/v1/user/keys/query", {})
    assert res == {"raw_path": "/_matrix/federation/v1/send/txn%2F1", "echo": body}
    assert res2["echo"] == {}
    assert [s["ok"] for s in p.seen] == [True, True]
    assert p.seen[0]["content_type"] == "application/json"


async def test_http_errors_become_federation_errors(peer, certs) -> None:
    p, key, _ = peer
    async with _client(key, certs) as client:
        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/missing/thing")
        assert e.value.status == 404 and e.value.errcode == "M_NOT_FOUND"
        assert e.value.body == {"errcode": "M_NOT_FOUND", "error": "no such thing"}
        assert p.name in str(e.value) and "no such thing" in str(e.value)
        assert not e.value.is_transport_error

        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/notjson")
        assert (e.value.status, e.value.errcode, e.value.body) == (200, "M_NOT_JSON", "<html>")

        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/crash")
        assert (e.value.status, e.value.errcode, e.value.body) == (502, None, "oops")


async def test_timeout_is_a_transport_error(peer, certs) -> None:
    p, key, _ = peer
    p.slow = 2.0
    async with _client(key, certs) as client:
        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/slow", timeout=0.2)
    assert e.value.status is None and e.value.is_transport_error
    assert p.name in str(e.value)


async def test_default_ip_filter_blocks_before_connecting(peer, certs) -> None:
    p, key, _ = peer
    async with _client(key, certs, ip_filter=IPFilter()) as client:
        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/anything")
    assert e.value.status is None and "blocked" in str(e.value)
    assert p.seen == []


async def test_hostname_goes_through_filtering_resolver(peer, certs) -> None:
    """`localhost:<port>` resolves via the connector: blocked by default, allowed when
    whitelisted, and the certificate is checked against the name (SNI localhost)."""
    p, key, server = peer
    name = f"localhost:{server.port}"
    p.name = name
    async with _client(key, certs, ip_filter=IPFilter()) as client:
        with pytest.raises(FederationError, match="blocked"):
            await client.get_json(name, "/x")
    assert p.seen == []
    async with _client(key, certs) as client:
        res = await client.get_json(name, "/x")
    assert res["raw_path"] == "/x"
    assert p.seen[0]["host"] == name and p.seen[0]["ok"]


async def test_tls_verification_is_on_by_default(peer, certs) -> None:
    p, key, _ = peer
    async with _client(key, certs, custom_ca_files=[]) as client:
        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/x")
    assert e.value.status is None
    assert "certificate" in str(e.value).lower()
    assert p.seen == []
    async with _client(key, certs, custom_ca_files=[], verify_tls=False) as client:
        assert (await client.get_json(p.name, "/x"))["raw_path"] == "/x"


async def test_whitelisted_servers_skip_certificate_checks_only(peer, certs) -> None:
    """federation_certificate_verification_whitelist: a listed server's certificate
    (here signed by a CA we do not trust) is accepted; others are still checked."""
    p, key, _ = peer
    async with _client(key, certs, custom_ca_files=[], unverified_servers=["127.0.0.*"]) as c:
        assert (await c.get_json(p.name, "/x"))["raw_path"] == "/x"
    async with _client(key, certs, custom_ca_files=[], unverified_servers=["other.*"]) as c:
        with pytest.raises(FederationError, match="(?i)certificate"):
            await c.get_json(p.name, "/x")


async def test_a_minimum_tls_version_above_the_peers_refuses_it(aiohttp_server, certs) -> None:
    """federation_client_minimum_tls_version: a peer speaking only TLS 1.2 is not
    reached by a client asking for 1.3, and is with 1.2."""
    import ssl

    key = generate_signing_key("ours")
    p = Peer(key)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", p.handle)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certs["crt"], certs["key"])
    server = await aiohttp_server(app, host="127.0.0.1", ssl=ctx)
    name = p.name = f"127.0.0.1:{server.port}"
    async with _client(key, certs, minimum_tls_version="1.3") as client:
        with pytest.raises(FederationError):
            await client.get_json(name, "/x")
    async with _client(key, certs, minimum_tls_version="1.2") as client:
        assert (await client.get_json(name, "/x"))["raw_path"] == "/x"


async def test_connection_refused_and_bad_name(certs) -> None:
    key = generate_signing_key("k")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    async with _client(key, certs) as client:
        with pytest.raises(FederationError) as e:
            await client.get_json(f"127.0.0.1:{port}", "/x")
        assert e.value.status is None and f"127.0.0.1:{port}" in str(e.value)
        with pytest.raises(FederationError, match="bad server name"):
            await client.get_json("bad name!", "/x")


async def test_keyring_fetches_keys_over_signed_client(peer, certs) -> None:
    """The keyring's direct fetch goes through the client, which signs it (as Synapse does)."""
    p, key, _ = peer
    async with _client(key, certs) as client:
        kr = Keyring(MemoryKeyStore(), client, OUR_NAME, [])
        vk = await kr.get_verify_key(p.name, "ed25519:peer", None)
        assert bytes(vk) == bytes(get_verify_key(p.peer_key))
        await kr.verify_json_for_server(p.name, sign_json({"a": 1}, p.name, p.peer_key), 10)
    (seen,) = p.seen
    assert seen["raw_path"] == "/_matrix/key/v2/server" and seen["ok"]


def test_ssl_context_modes(certs) -> None:
    import ssl

    assert make_ssl_context().verify_mode == ssl.CERT_REQUIRED
    custom = make_ssl_context(True, [str(certs["ca"])])
    assert custom.verify_mode == ssl.CERT_REQUIRED and custom.check_hostname
    assert [c["subject"] for c in custom.get_ca_certs()] == [
        ((("commonName", "Test Federation CA"),),)
    ]
    assert make_ssl_context(False).verify_mode == ssl.CERT_NONE


async def test_client_installs_its_well_known_fetcher() -> None:
    d = ServerDiscovery()
    client = FederationClient(OUR_NAME, generate_signing_key("k"), discovery=d)
    assert d.well_known_fetcher is not None
    await client.close()


async def test_answers_are_bounded_and_never_decompressed(peer, certs) -> None:
    """Issue 8.2: a key server answering with a gzip bomb or an endless body costs us
    at most the bound for that kind of answer, read as a stream."""
    import resource

    p, key, _ = peer
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with _client(key, certs) as client:
        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/_matrix/key/v2/query/bomb")
        assert e.value.is_transport_error and "Content-Encoding" in str(e.value)
        assert p.accept_encoding == "identity"
        with pytest.raises(FederationError) as e:
            await client.get_json(p.name, "/_matrix/key/v2/query/huge")
        assert e.value.is_transport_error and "larger than" in str(e.value)
        # Still usable afterwards.
        assert (await client.get_json(p.name, "/_matrix/key/v2/server"))["server_name"] == p.name
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100
