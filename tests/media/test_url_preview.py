"""URL previews (issue 12): the OpenGraph card of a page, its image stored as media;
and the SSRF defences: blocked ranges (checked at DNS resolution and on redirects),
0.0.0.0 always, the URL blacklist, size limits, compressed bodies, non-http schemes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from homeserver.app import create_app
from homeserver.config import ConfigError, parse_config
from tests.client.helpers import auth, make_user

PAGE = """<html><head>
<meta charset="utf-8">
<title>Fallback title</title>
<meta property="og:title" content="Tea &amp; cake">
<meta property="og:description" content="A page about tea">
<meta property="og:image" content="/picture.png">
</head><body><img src="/other.png"></body></html>"""


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def site() -> AsyncIterator[TestServer]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=png((120, 80)), content_type="image/png")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="<title>Only a title</title>", content_type="text/html")

    async def redirect_to_metadata(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def redirect_to_zero(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://0.0.0.0:{request.url.port}/page")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>" + b"a" * 3_000_000, content_type="text/html")

    async def language(request: web.Request) -> web.Response:
        wanted = request.headers.get("Accept-Language", "")
        return web.Response(text=f"<title>{wanted}</title>", content_type="text/html")

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=b"\x1f\x8b...", content_type="text/html", headers={"Content-Encoding": "gzip"}
        )

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/picture.png", picture)
    app.router.add_get("/plain", plain)
    app.router.add_get("/to-metadata", redirect_to_metadata)
    app.router.add_get("/to-zero", redirect_to_zero)
    app.router.add_get("/huge", huge)
    app.router.add_get("/gzipped", gzipped)
    app.router.add_get("/language", language)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def preview_client(aiohttp_client: Any, tmp_config: Any, **extra: Any) -> TestClient:
    config = tmp_config(
        url_preview_enabled=True,
        url_preview_ip_range_blacklist=["10.0.0.0/8", "169.254.0.0/16"],
        max_spider_size="1M",
        **extra,
    )
    return await aiohttp_client(create_app(config))


async def preview(client: TestClient, token: str, url: str) -> tuple[int, Any]:
    resp = await client.get(
        "/_matrix/client/v1/media/preview_url", params={"url": url}, headers=auth(token)
    )
    return resp.status, await resp.json()


async def test_a_page_preview_has_its_opengraph_card_and_image(
    aiohttp_client: Any, tmp_config: Any, site: TestServer
) -> None:
    client = await preview_client(aiohttp_client, tmp_config)
    _, token, _ = await make_user(client, "alice")
    status, og = await preview(client, token, str(site.make_url("/page")))
    assert status == 200, og
    assert og["og:title"] == "Tea & cake"
    assert og["og:description"] == "A page about tea"
    assert og["og:image"].startswith("mxc://test.local/")
    assert og["og:image:width"] == 120 and og["og:image:height"] == 80
    assert og["og:image:type"] == "image/png"
    resp = await client.get(
        f"/_matrix/client/v1/media/download/{og['og:image'][6:]}", headers=auth(token)
    )
    assert await resp.read() == png((120, 80))

    status, og = await preview(client, token, str(site.make_url("/plain")))
    assert og == {"og:title": "Only a title", "og:url": str(site.make_url("/plain"))}

    status, og = await preview(client, token, str(site.make_url("/picture.png")))
    assert og["og:image"].startswith("mxc://") and og["matrix:image:size"] > 0


async def test_previews_are_off_by_default(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    status, body = await preview(app_client, token, "https://example.org/")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"


def test_enabling_previews_requires_an_ip_blacklist(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="url_preview_ip_range_blacklist"):
        parse_config(
            {"server_name": "x.y", "url_preview_enabled": True}, base_dir=tmp_path, source="t"
        )


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/to-metadata", 403),  # a redirect into a blocked range
        ("/huge", 502),  # larger than max_spider_size
        ("/gzipped", 502),  # a compressed body is never decoded
    ],
)
async def test_hostile_pages(
    aiohttp_client: Any, tmp_config: Any, site: TestServer, path: str, status: int
) -> None:
    client = await preview_client(aiohttp_client, tmp_config)
    _, token, _ = await make_user(client, "alice")
    got, body = await preview(client, token, str(site.make_url(path)))
    assert got == status, body
    assert body["errcode"] == "M_UNKNOWN"


async def test_blocked_addresses_by_name_and_by_literal(
    aiohttp_client: Any, tmp_config: Any, site: TestServer
) -> None:
    client = await aiohttp_client(
        create_app(
            tmp_config(url_preview_enabled=True, url_preview_ip_range_blacklist=["127.0.0.0/8"])
        )
    )
    _, token, _ = await make_user(client, "alice")
    port = site.port
    for url in (
        f"http://127.0.0.1:{port}/page",  # a literal
        f"http://localhost:{port}/page",  # a name resolving into the range
        f"http://[::ffff:127.0.0.1]:{port}/page",  # the same address in IPv6 notation
        f"http://0.0.0.0:{port}/page",  # always blocked, whatever the list says
    ):
        status, body = await preview(client, token, url)
        assert status == 403, (url, body)


async def test_zero_address_is_blocked_even_on_a_redirect(
    aiohttp_client: Any, tmp_config: Any, site: TestServer
) -> None:
    client = await preview_client(aiohttp_client, tmp_config)
    _, token, _ = await make_user(client, "alice")
    status, body = await preview(client, token, str(site.make_url("/to-zero")))
    assert status == 403, body


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/", "gopher://x/", "http://", "not a url"]
)
async def test_only_http_urls(aiohttp_client: Any, tmp_config: Any, url: str) -> None:
    client = await preview_client(aiohttp_client, tmp_config)
    _, token, _ = await make_user(client, "alice")
    status, body = await preview(client, token, url)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_url_blacklist(aiohttp_client: Any, tmp_config: Any, site: TestServer) -> None:
    client = await preview_client(
        aiohttp_client,
        tmp_config,
        url_preview_url_blacklist=[{"path": "/pa*"}, {"netloc": "^evil\\.", "scheme": "http"}],
    )
    _, token, _ = await make_user(client, "alice")
    status, body = await preview(client, token, str(site.make_url("/page")))
    assert status == 403, body
    status, body = await preview(client, token, "http://evil.example/x")
    assert status == 403
    status, body = await preview(client, token, str(site.make_url("/plain")))
    assert status == 200


@pytest.mark.parametrize(
    ("setting", "sent"),
    [(None, "en"), (["fr-CA", "fr;q=0.9", "*;q=0.5"], "fr-CA, fr;q=0.9, *;q=0.5")],
    ids=["default", "configured"],
)
async def test_previews_ask_for_the_configured_languages(
    aiohttp_client: Any, tmp_config: Any, site: TestServer, setting: Any, sent: str
) -> None:
    """url_preview_accept_language (Synapse's): the Accept-Language a page is asked with."""
    extra = {} if setting is None else {"url_preview_accept_language": setting}
    client = await preview_client(aiohttp_client, tmp_config, **extra)
    token = (await make_user(client, "lang"))[1]
    status, og = await preview(client, token, str(site.make_url("/language")))
    assert status == 200 and og["og:title"] == sent
