"""Outbound federation HTTP: discovery, TLS, X-Matrix signing, JSON in and out.

The one rule that matters for interop: the URI we sign is byte for byte the URI we
send. Paths are built here with every variable segment percent-encoded
(`quote(..., safe="")`, so `$`, `/`, `:` and `!` in IDs are escaped), signed, and handed
to aiohttp as an already-encoded yarl URL so nothing re-encodes it afterwards.

Every connection goes through the IP range policy: IP literals are checked here, names
are resolved through `FilteringResolver`.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
from canonicaljson import encode_canonical_json
from yarl import URL

from federation.auth import sign_request
from federation.discovery import AiohttpWellKnownFetcher, ResolvedServer, ServerDiscovery
from homeserver.ipfilter import (
    FilteringResolver,
    IPBlockedError,
    IPFilter,
    ip_literal_guard,
    is_ip_literal,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
USER_AGENT = "homeserver-py/0.1"

QueryValue = str | int | bool | Sequence[str | int | bool]
Query = Mapping[str, QueryValue] | Sequence[tuple[str, str | int | bool]]


class FederationError(Exception):
    """A federation request that did not produce a 2xx JSON answer.

    `status` is the HTTP status, or None when no response arrived (DNS, connect, TLS,
    timeout, blocked address). `errcode` is the Matrix errcode from the body if any;
    `body` is the parsed JSON body, or the raw text when it was not JSON.
    """

    def __init__(
        self,
        status: int | None,
        errcode: str | None,
        body: Any,
        *,
        destination: str = "",
        method: str = "",
        path: str = "",
        reason: str = "",
    ) -> None:
        self.status = status
        self.errcode = errcode
        self.body = body
        self.destination = destination
        self.method = method
        self.path = path
        what = f"HTTP {status}" if status is not None else "no response"
        detail = reason
        if not detail and isinstance(body, dict) and isinstance(body.get("error"), str):
            detail = body["error"]
        text = f"{method} {path} to {destination}: {what}"
        if errcode:
            text += f" {errcode}"
        if detail:
            text += f": {detail}"
        super().__init__(text)

    @property
    def is_transport_error(self) -> bool:
        """True when the peer never answered (worth retrying later, unlike most 4xx)."""
        return self.status is None


def fed_path(template: str, *args: str) -> str:
    """Fill `{}` placeholders of a path template with percent-encoded segments.

    `fed_path("/_matrix/federation/v1/event/{}", "$a/b")` gives
    `/_matrix/federation/v1/event/%24a%2Fb`.
    """
    return template.format(*(quote(str(a), safe="") for a in args))


def encode_path(path: str | Sequence[str]) -> str:
    """A raw path: strings are taken as already encoded, sequences are segments to encode."""
    if isinstance(path, str):
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        return path
    return "/" + "/".join(quote(str(seg), safe="") for seg in path)


def _query_value(v: str | int | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def encode_query(query: Query | None) -> str:
    """`k=v&k=v2` with keys and values percent-encoded; lists become repeated keys."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    items: Iterable[tuple[str, Any]] = query.items() if isinstance(query, Mapping) else query
    for k, v in items:
        if isinstance(v, list | tuple):
            pairs.extend((k, _query_value(x)) for x in v)
        else:
            pairs.append((k, _query_value(v)))
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.I)


def build_uri(path: str | Sequence[str], query: Query | None = None) -> str:
    """The exact request target (path + query) that is both signed and sent."""
    raw = encode_path(path)
    qs = encode_query(query)
    return f"{raw}?{qs}" if qs else raw


TLS_VERSIONS = {
    "1": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def make_ssl_context(
    verify_tls: bool = True,
    custom_ca_files: Sequence[str] = (),
    minimum_version: str | None = None,
) -> ssl.SSLContext:
    """TLS context for federation: system trust, or only the given CAs when listed.

    A custom CA list replaces the system store (like Synapse's
    federation_custom_ca_list), which is what a closed test federation wants.
    `minimum_version` (federation_client_minimum_tls_version: "1".."1.3"): the oldest
    TLS we speak to other servers (unset: the system's default).
    """
    if not verify_tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif custom_ca_files:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for ca in custom_ca_files:
            ctx.load_verify_locations(cafile=ca)
    else:
        ctx = ssl.create_default_context()
    if minimum_version is not None:
        ctx.minimum_version = TLS_VERSIONS[minimum_version]
    return ctx


# The most we read of a peer's answer, by what was asked (Synapse bounds them too):
# key documents are small; state, auth chains and joins of big rooms are not. A body
# over its bound is abandoned as it streams in, never buffered whole.
MAX_KEY_RESPONSE_BYTES = 1024 * 1024
MAX_ROOM_STATE_RESPONSE_BYTES = 128 * 1024 * 1024
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# One small JSON object (a room's complexity: {"v1": 1.5}).
MAX_SMALL_RESPONSE_BYTES = 64 * 1024
_ROOM_STATE_PATHS = (
    "/_matrix/federation/v1/send_join/",
    "/_matrix/federation/v2/send_join/",
    "/_matrix/federation/v1/state/",
    "/_matrix/federation/v1/state_ids/",
    "/_matrix/federation/v1/event_auth/",
    "/_matrix/federation/v1/backfill/",
    "/_matrix/federation/v1/get_missing_events/",
)


def max_response_bytes(uri: str) -> int:
    if uri.startswith("/_matrix/key/"):
        return MAX_KEY_RESPONSE_BYTES
    if uri.startswith(_ROOM_STATE_PATHS):
        return MAX_ROOM_STATE_RESPONSE_BYTES
    if uri.startswith("/_matrix/federation/unstable/rooms/") and uri.endswith("/complexity"):
        return MAX_SMALL_RESPONSE_BYTES
    return MAX_RESPONSE_BYTES


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, err: dict[str, str]) -> bytes:
    """The body, read as a stream and abandoned past `limit`; only identity encoding."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FederationError(
            None, None, None, reason=f"unrequested Content-Encoding {encoding[:20]}", **err
        )
    if resp.content_length is not None and resp.content_length > limit:
        raise FederationError(None, None, None, reason=f"response larger than {limit} bytes", **err)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise FederationError(
                None, None, None, reason=f"response larger than {limit} bytes", **err
            )
        chunks.append(chunk)
    return b"".join(chunks)


class FederationClient:
    """Signed JSON requests to other homeservers over one shared aiohttp session.

    The session is created lazily inside the running loop and closed by `close()`.
    When `discovery` has no well-known fetcher yet, this client installs one that uses
    its own session, so .well-known lookups share the TLS trust and IP policy.
    """

    def __init__(
        self,
        server_name: str,
        signing_key: Any,
        *,
        discovery: ServerDiscovery | None = None,
        ip_filter: IPFilter | None = None,
        verify_tls: bool = True,
        custom_ca_files: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT_S,
        user_agent: str = USER_AGENT,
        plain_http: bool = False,
        minimum_tls_version: str | None = None,
        unverified_servers: Sequence[str] = (),
    ) -> None:
        """`unverified_servers`: globs of server names whose certificates are not
        checked (federation_certificate_verification_whitelist: a closed federation
        with self-signed certificates, while every other server's are)."""
        self.server_name = server_name
        # http:// instead of https:// (config federation_client_plain_http_for_tests):
        # lets a loopback test federation run without certificates. Never in production.
        self.plain_http = plain_http
        self.signing_key = signing_key
        self.discovery = discovery or ServerDiscovery()
        if self.discovery.well_known_fetcher is None:
            self.discovery.well_known_fetcher = AiohttpWellKnownFetcher(self._get_session)
        self.ip_filter = ip_filter or IPFilter()
        self.ssl_context = make_ssl_context(verify_tls, custom_ca_files, minimum_tls_version)
        self._unverified = [_glob(g) for g in unverified_servers]
        self._unverified_context = (
            make_ssl_context(False, (), minimum_tls_version) if unverified_servers else None
        )
        self.timeout = timeout
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=FilteringResolver(self.ip_filter),
                ssl=self.ssl_context,
                limit=200,
                limit_per_host=20,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
                # Compressed answers are never asked for (Accept-Encoding: identity) nor
                # decoded: 1 MB of gzip can decode to 1 GB in memory.
                auto_decompress=False,
                trace_configs=[ip_literal_guard(self.ip_filter)],
            )
        return self._session

    def _ssl_for(self, server_name: str) -> dict[str, Any]:
        """The request's TLS context when the server's certificate goes unchecked."""
        if self._unverified_context is not None and any(
            g.fullmatch(server_name) for g in self._unverified
        ):
            return {"ssl": self._unverified_context}
        return {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FederationClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        destination: str,
        path: str | Sequence[str],
        *,
        query: Query | None = None,
        json_body: Any | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one signed request and return the parsed JSON response.

        `path` is a raw, already percent-encoded path (see `fed_path`) or a sequence of
        literal segments. Raises FederationError on any failure; tries the next SRV
        target only when a connection could not be made at all.
        """
        method = method.upper()
        uri = build_uri(path, query)
        err = {"destination": destination, "method": method, "path": uri}
        try:
            targets = await self.discovery.resolve_all(destination)
        except ValueError as e:
            raise FederationError(None, None, None, reason=f"bad server name: {e}", **err) from e
        auth = sign_request(method, uri, self.server_name, destination, json_body, self.signing_key)
        headers = {"Authorization": auth}
        data: bytes | None = None
        if json_body is not None:
            data = encode_canonical_json(json_body)
            headers["Content-Type"] = "application/json"
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout)
        last: Exception | None = None
        for target in targets:
            try:
                return await self._send(target, method, uri, headers, data, client_timeout, err)
            except (IPBlockedError, aiohttp.ClientConnectorError) as e:
                last = e
                log.info("cannot connect to %s for %s: %s", target, destination, e)
        reason = str(last)
        os_error = getattr(last, "os_error", None)
        if os_error is not None and str(os_error) not in reason:
            reason = f"{reason} ({os_error})"
        raise FederationError(None, None, None, reason=reason, **err) from last

    async def _send(
        self,
        target: ResolvedServer,
        method: str,
        uri: str,
        headers: dict[str, str],
        data: bytes | None,
        timeout: aiohttp.ClientTimeout,
        err: dict[str, str],
    ) -> Any:
        if is_ip_literal(target.host):
            self.ip_filter.check(target.host)
        base = target.base_url
        if self.plain_http:
            base = "http://" + base.removeprefix("https://")
        url = URL(base + uri, encoded=True)
        try:
            async with self._get_session().request(
                method,
                url,
                headers={**headers, "Host": target.host_header},
                data=data,
                timeout=timeout,
                server_hostname=None if self.plain_http else target.tls_server_name,
                allow_redirects=False,
                **self._ssl_for(err["destination"]),
            ) as resp:
                status = resp.status
                raw = await _read_bounded(resp, max_response_bytes(uri), err)
        except (IPBlockedError, aiohttp.ClientConnectorError, FederationError):
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            reason = f"{type(e).__name__}: {e}"
            raise FederationError(None, None, None, reason=reason, **err) from e
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")[:1000]
            if 200 <= status < 300:
                raise FederationError(
                    status, "M_NOT_JSON", body, reason="response is not JSON", **err
                ) from None
        if not 200 <= status < 300:
            errcode = body.get("errcode") if isinstance(body, dict) else None
            raise FederationError(
                status, errcode if isinstance(errcode, str) else None, body, **err
            )
        return body

    @asynccontextmanager
    async def stream(
        self,
        destination: str,
        path: str | Sequence[str],
        *,
        query: Query | None = None,
        timeout: float | None = None,
        signed: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed GET whose response the caller reads as a stream (media), whatever
        its status. The body is never decompressed; redirects are not followed."""
        uri = build_uri(path, query)
        err = {"destination": destination, "method": "GET", "path": uri}
        try:
            targets = await self.discovery.resolve_all(destination)
        except ValueError as e:
            raise FederationError(None, None, None, reason=f"bad server name: {e}", **err) from e
        headers = {}
        if signed:
            headers["Authorization"] = sign_request(
                "GET", uri, self.server_name, destination, None, self.signing_key
            )
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout)
        last: Exception | None = None
        for target in targets:
            if is_ip_literal(target.host) and not self.ip_filter.is_allowed(
                target.host.strip("[]")
            ):
                last = IPBlockedError(f"{target.host} is blocked")
                continue
            base = target.base_url
            if self.plain_http:
                base = "http://" + base.removeprefix("https://")
            try:
                resp = await self._get_session().get(
                    URL(base + uri, encoded=True),
                    headers={**headers, "Host": target.host_header},
                    timeout=client_timeout,
                    server_hostname=None if self.plain_http else target.tls_server_name,
                    allow_redirects=False,
                )
            except (IPBlockedError, aiohttp.ClientConnectorError) as e:
                last = e
                continue
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise FederationError(
                    None, None, None, reason=f"{type(e).__name__}: {e}", **err
                ) from e
            try:
                yield resp
            finally:
                resp.release()
            return
        raise FederationError(None, None, None, reason=str(last), **err) from last

    @asynccontextmanager
    async def stream_url(
        self, url: str, *, timeout: float | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An unsigned GET of an absolute URL a peer pointed us to (a media redirect),
        through the same IP policy; redirects are followed (each one checked)."""
        try:
            async with self._get_session().get(
                url,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
                max_redirects=5,
            ) as resp:
                yield resp
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise FederationError(
                None,
                None,
                None,
                reason=f"{type(e).__name__}: {e}",
                destination=url[:200],
                method="GET",
                path=url[:200],
            ) from e

    async def get_json(
        self,
        destination: str,
        path: str | Sequence[str],
        *,
        query: Query | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await self.request("GET", destination, path, query=query, timeout=timeout)

    async def put_json(
        self,
        destination: str,
        path: str | Sequence[str],
        json_body: Any,
        *,
        query: Query | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await self.request(
            "PUT", destination, path, query=query, json_body=json_body, timeout=timeout
        )

    async def post_json(
        self,
        destination: str,
        path: str | Sequence[str],
        json_body: Any,
        *,
        query: Query | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await self.request(
            "POST", destination, path, query=query, json_body=json_body, timeout=timeout
        )
