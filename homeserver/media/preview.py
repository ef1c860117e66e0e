"""URL previews (GET /preview_url): the OpenGraph card of a page a user posted.

The server fetches a URL the user chose, so this is an open door into whatever network
the server sits in unless every connection is checked. Here:
- only http(s) URLs, refused when they match url_preview_url_blacklist;
- every address is checked against url_preview_ip_range_blacklist/whitelist when a
  name is resolved (the connection goes to the checked address, so DNS rebinding cannot
  switch it afterwards), IP literals are checked on the first URL and on every redirect
  (at most MAX_REDIRECTS), and 0.0.0.0 and :: are always blocked;
- at most max_spider_size bytes are read, no compressed bodies are accepted (a small
  gzip body can expand enormously), and a fetch lasts at most FETCH_TIMEOUT_S;
- MAX_CONCURRENT_FETCHES previews run at once, a URL asked for by many users at once is
  fetched once, and answers are cached (CACHE_SIZE entries, CACHE_TTL_S).

Pages are parsed with the standard library's HTML parser on a worker thread; an image
(the page's og:image, or the URL itself) is stored as media of the asking user and
answered with its mxc:// URI, like Synapse.
"""

from __future__ import annotations

import asyncio
import fnmatch
import io
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from homeserver.config import MediaConfig
from homeserver.errors import MatrixError, invalid_param
from homeserver.ipfilter import FilteringResolver, IPBlockedError, IPFilter, ip_literal_guard
from homeserver.media.repository import MediaRepository

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
FETCH_TIMEOUT_S = 15.0
MAX_CONCURRENT_FETCHES = 8
CACHE_SIZE = 1000
CACHE_TTL_S = 3600.0
MAX_TEXT = 1000  # characters kept of a title or description
USER_AGENT = "Mozilla/5.0 (compatible; MatrixHomeserver URL preview)"


def preview_error(status: int, message: str) -> MatrixError:
    return MatrixError(status, "M_UNKNOWN", message)


def url_blocked(url: str, rules: tuple[tuple[tuple[str, str], ...], ...]) -> bool:
    """Whether `url` matches every component of one url_preview_url_blacklist entry."""
    parts = urlsplit(url)
    values = {
        "scheme": parts.scheme,
        "netloc": parts.netloc,
        "path": parts.path,
        "query": parts.query,
        "fragment": parts.fragment,
        "username": parts.username or "",
        "password": parts.password or "",
        "hostname": parts.hostname or "",
        "port": str(parts.port or ""),
        "params": "",
    }
    for rule in rules:
        matched = True
        for component, pattern in rule:
            value = values.get(component, "")
            if pattern.startswith("^"):
                ok = re.match(pattern, value) is not None
            else:
                ok = fnmatch.fnmatch(value, pattern)
            if not ok:
                matched = False
                break
        if matched:
            return True
    return False


class _OpenGraph(HTMLParser):
    """Collects <meta property/name content>, <title> and the first <img>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self.first_image: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "meta":
            key = (a.get("property") or a.get("name") or "").strip().lower()
            content = a.get("content")
            if key and content is not None and key not in self.meta and len(self.meta) < 200:
                self.meta[key] = content.strip()
        elif tag == "title" and self.title is None:
            self._in_title = True
        elif tag == "img" and self.first_image is None and a.get("src"):
            self.first_image = a["src"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = "".join(self._title_parts).strip()

    def handle_data(self, data: str) -> None:
        if self._in_title and sum(map(len, self._title_parts)) < MAX_TEXT * 4:
            self._title_parts.append(data)


def parse_html(body: bytes, charset: str | None) -> dict[str, str]:
    """The OpenGraph fields of a page (og:title, og:description, og:image...)."""
    text = None
    for encoding in (charset, _meta_charset(body), "utf-8"):
        if not encoding:
            continue
        try:
            text = body.decode(encoding, errors="replace")
            break
        except LookupError:
            continue
    parser = _OpenGraph()
    try:
        parser.feed(text or "")
        parser.close()
    except Exception:  # a broken page yields what was parsed before the break
        log.debug("HTML parse stopped early", exc_info=True)
    og: dict[str, str] = {k: v for k, v in parser.meta.items() if k.startswith("og:")}
    if "og:title" not in og:
        title = parser.meta.get("twitter:title") or parser.title
        if title:
            og["og:title"] = title
    if "og:description" not in og:
        description = parser.meta.get("twitter:description") or parser.meta.get("description")
        if description:
            og["og:description"] = description
    if "og:image" not in og:
        image = parser.meta.get("twitter:image") or parser.first_image
        if image:
            og["og:image"] = image
    return {k: v[:MAX_TEXT] for k, v in og.items() if isinstance(v, str)}


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([a-zA-Z0-9_-]{1,40})", re.I)


def _meta_charset(body: bytes) -> str | None:
    match = _META_CHARSET.search(body[:4096])
    return match.group(1).decode("ascii") if match else None


class _Fetched:
    def __init__(self, url: str, content_type: str, charset: str | None, body: bytes) -> None:
        self.url = url
        self.content_type = content_type
        self.charset = charset
        self.body = body


class UrlPreviewer:
    def __init__(self, config: MediaConfig, repository: MediaRepository) -> None:
        self._config = config
        self._repository = repository
        self._filter = IPFilter(
            blacklist=[str(n) for n in config.url_preview_ip_range_blacklist],
            whitelist=[str(n) for n in config.url_preview_ip_range_whitelist],
        )
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._running: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=FilteringResolver(self._filter), limit=MAX_CONCURRENT_FETCHES * 2
                ),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                auto_decompress=False,
                trace_configs=[ip_literal_guard(self._filter)],
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _check_url(self, url: str) -> None:
        if len(url) > MAX_URL_LENGTH:
            raise invalid_param("URL is too long")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError:
            raise invalid_param("Invalid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid_param("Only http and https URLs can be previewed")
        if url_blocked(url, self._config.url_preview_url_blacklist):
            raise preview_error(403, "URL blocked by url_preview_url_blacklist")

    async def preview(self, url: str, user_id: str, ts: int | None = None) -> dict[str, Any]:
        self._check_url(url)
        cached = self._cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        running = self._running.get(url)
        if running is None:
            running = asyncio.ensure_future(self._make(url, user_id))
            self._running[url] = running
            running.add_done_callback(lambda _f: self._running.pop(url, None))
        result = await asyncio.shield(running)
        return result

    async def _make(self, url: str, user_id: str) -> dict[str, Any]:
        async with self._slots:
            fetched = await self._fetch(url)
            if fetched.content_type.startswith("image/"):
                og = await self._image(fetched, user_id)
            elif fetched.content_type in ("text/html", "application/xhtml+xml"):
                og = await asyncio.to_thread(parse_html, fetched.body, fetched.charset)
                image = og.pop("og:image", None)
                if image:
                    og.update(await self._page_image(urljoin(fetched.url, image), user_id))
                og.setdefault("og:url", fetched.url)
            else:
                og = {}
        self._cache[url] = (time.monotonic() + CACHE_TTL_S, og)
        self._cache.move_to_end(url)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return og

    async def _page_image(self, image_url: str, user_id: str) -> dict[str, Any]:
        try:
            self._check_url(image_url)
            fetched = await self._fetch(image_url)
        except MatrixError as e:
            log.info("preview image %s: %s", image_url[:200], e)
            return {}
        if not fetched.content_type.startswith("image/"):
            return {}
        return await self._image(fetched, user_id)

    async def _image(self, fetched: _Fetched, user_id: str) -> dict[str, Any]:
        async def body() -> AsyncIterator[bytes]:
            yield fetched.body

        filename = urlsplit(fetched.url).path.rsplit("/", 1)[-1] or None
        mxc = await self._repository.upload(
            user_id, fetched.content_type, filename, body(), len(fetched.body)
        )
        og: dict[str, Any] = {
            "og:image": mxc,
            "og:image:type": fetched.content_type,
            "matrix:image:size": len(fetched.body),
        }
        size = await asyncio.to_thread(_image_size, fetched.body, self._config.max_image_pixels)
        if size is not None:
            og["og:image:width"], og["og:image:height"] = size
        return og

    async def _fetch(self, url: str) -> _Fetched:
        limit = self._config.max_spider_size
        try:
            async with self._get_session().get(
                url,
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S),
                max_redirects=MAX_REDIRECTS,
                headers={"Accept-Language": self._config.url_preview_accept_language},
            ) as resp:
                if resp.status != 200:
                    raise preview_error(502, f"The page answered HTTP {resp.status}")
                encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise preview_error(502, "The page sent a compressed body")
                if resp.content_length is not None and resp.content_length > limit:
                    raise preview_error(502, "The page is too large to preview")
                buffer = io.BytesIO()
                async for chunk in resp.content.iter_chunked(65536):
                    if buffer.tell() + len(chunk) > limit:
                        raise preview_error(502, "The page is too large to preview")
                    buffer.write(chunk)
                return _Fetched(
                    str(resp.url), resp.content_type.lower(), resp.charset, buffer.getvalue()
                )
        except IPBlockedError:
            raise preview_error(
                403, "IP address blocked by url_preview_ip_range_blacklist"
            ) from None
        except aiohttp.TooManyRedirects:
            raise preview_error(502, "Too many redirects") from None
        except aiohttp.ClientConnectorError as e:
            if isinstance(getattr(e, "os_error", None), IPBlockedError) or "blocked" in str(e):
                raise preview_error(
                    403, "IP address blocked by url_preview_ip_range_blacklist"
                ) from None
            raise preview_error(502, "Could not connect to the page's server") from None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise preview_error(502, f"Failed to download the page: {type(e).__name__}") from None


def _image_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "GIF", "WEBP")) as img:
            if img.width * img.height > max_pixels:
                return None
            return img.width, img.height
    except Exception:
        return None
