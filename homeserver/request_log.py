"""One INFO line per request, like Synapse's "Processed request" lines.

    127.0.0.1 - 8008 - {@alice:example.org} Processed request: 0.004sec 312B 200
        "GET /_matrix/client/v3/sync?since=s72&access_token=<redacted> HTTP/1.1" "Element/1.11"

On the `homeserver.access` logger: the client's address, our port, who made the
request (a user ID, a server name for federation, None when unauthenticated), how long
it took, the response size and status, the request line with secrets in the query
string redacted (access tokens, registration and login tokens, client secrets), and
the user agent. Database statements are traced on their own logger
(`homeserver.storage.sql`, DEBUG), never here.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote, urlencode

from aiohttp import web

from homeserver.http import REQUESTER_KEY, Handler
from homeserver.logging_setup import REQUEST_ID, new_request_id

ACCESS_LOG = logging.getLogger("homeserver.access")

# Query parameters whose values are secrets.
REDACTED_PARAMS = frozenset({"access_token", "client_secret", "token", "login_token"})
MAX_LOGGED_URI = 2000
MAX_USER_AGENT = 300


def _plainly_harmless(raw: str) -> bool:
    """Whether the request target as received can be logged as it is: printable ASCII
    and no query key that is, or could decode to, a secret parameter's name."""
    if not (raw.isascii() and raw.isprintable()):
        return False
    _, _, query = raw.partition("?")
    for pair in query.split("&"):
        key = pair.partition("=")[0]
        if key in REDACTED_PARAMS or "%" in key or "+" in key:
            return False
    return True


def redacted_uri(request: web.Request) -> str:
    """The path and query as received, with secret query values replaced. Nearly every
    request (tokens travel in the Authorization header) is logged as received, without
    decoding and re-encoding its query (a /sync filter is a long one) on every line."""
    raw = request.raw_path
    if _plainly_harmless(raw):
        return raw[:MAX_LOGGED_URI]
    path = quote(request.path, safe="/!$&'()*+,;=:@%~")
    if not request.query_string:
        return path[:MAX_LOGGED_URI]
    items = [(k, "<redacted>" if k in REDACTED_PARAMS else v) for k, v in request.query.items()]
    return f"{path}?{urlencode(items, safe='<>')}"[:MAX_LOGGED_URI]


def _port(request: web.Request) -> int | str:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else "-"


def _size(response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray):
        return len(body)
    return response.content_length or 0


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    context = new_request_id(request.method)
    if not ACCESS_LOG.isEnabledFor(logging.INFO):
        try:
            return await handler(request)
        finally:
            REQUEST_ID.reset(context)
    started = time.perf_counter()
    response: web.StreamResponse | None = None
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except BaseException:
        status = 499 if request.transport is None or request.transport.is_closing() else 500
        raise
    finally:
        elapsed = time.perf_counter() - started
        agent = request.headers.get("User-Agent", "-")[:MAX_USER_AGENT]
        ACCESS_LOG.info(
            '%s - %s - {%s} Processed request: %.3fsec %dB %d "%s %s HTTP/%d.%d" "%s"',
            request.remote or "-",
            _port(request),
            request.get(REQUESTER_KEY),
            elapsed,
            _size(response),
            status,
            request.method,
            redacted_uri(request),
            request.version.major,
            request.version.minor,
            agent,
        )
        REQUEST_ID.reset(context)
