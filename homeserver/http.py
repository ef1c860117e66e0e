"""HTTP plumbing shared by every sub-app: error rendering, CORS, JSON in and out.

This is THE place where untrusted bytes become Python values. `read_json_body` accepts
only what can be re-encoded as canonical JSON later (valid UTF-8, no lone surrogates,
no NaN/Infinity, bounded size and depth), so handlers and the event code never meet a
value that explodes when signed or stored. `path_param`/`query_param` turn a
validator's ValueError into a spec error. `error_middleware` makes every failure,
including aiohttp's own 404/405/413, a Matrix JSON error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from homeserver.appstate import LISTENERS
from homeserver.config import ListenerConfig
from homeserver.errors import MatrixError, invalid_param, missing_param, too_large, unrecognized
from homeserver.storage.errors import DatabaseUnavailableError, UnstorableValueError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_MAX_BODY = 10 * 1024 * 1024
# The longest a request body may send nothing: nginx's client_body_timeout and
# Twisted's channel timeout (Synapse) are 60 s; a phone's upload may stall that long.
BODY_STALL_TIMEOUT_S = 60.0
MAX_JSON_DEPTH = 100

# Request size limit for the JSON reader; app.py sets it from config.max_request_body.
MAX_BODY_KEY = web.AppKey("max_request_body", int)
# Who made the request (a user ID, or a server name for federation), noted on the
# request by whoever authenticated it, for the request log.
REQUESTER_KEY = "requester"
# The access token's row (TokenInfo), noted by get_requester for the last-seen update.
TOKEN_INFO_KEY = "token_info"

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": (
        "Origin, X-Requested-With, Content-Type, Accept, Authorization, Date"
    ),
    "Access-Control-Expose-Headers": "Content-Length, Content-Type",
}


# --------------------------------------------------------------------------- output


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON.

    orjson writes the same bytes as the standard library's compact form about 5x faster
    (a 450 KB initial /sync: 18 ms -> 4 ms; encoding was 22% of the main thread with
    1,000 clients syncing). It refuses integers beyond 64 bits and non-string keys (old
    rooms' events may hold big integers): those take the standard library's path, which
    refuses NaN/Infinity. (Inputs never carry NaN: `read_json_body` rejects it; orjson
    would write null.)"""
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
            "utf-8"
        )


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response. Use this rather than web.json_response (compact, strict, UTF-8).

    The header says exactly `Content-Type: application/json`, as Synapse's does (JSON is
    UTF-8 by definition, RFC 8259; some clients compare the header literally)."""
    return web.Response(
        body=encode_json(obj), status=status, content_type="application/json", headers=headers
    )


def error_response(error: MatrixError) -> web.Response:
    return json_response(error.to_json(), status=error.status)


# --------------------------------------------------------------------------- middleware


def _add_cors(response: web.StreamResponse) -> None:
    if response.prepared:  # streamed responses set headers themselves before prepare()
        return
    for name, value in CORS_HEADERS.items():
        response.headers.setdefault(name, value)


def _from_http_exception(exc: web.HTTPException) -> MatrixError | None:
    """aiohttp's own errors as Matrix errors; None for non-errors (redirects)."""
    if exc.status < 400:
        return None
    if isinstance(exc, web.HTTPNotFound):
        return unrecognized("Unrecognized request")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request: method not allowed")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large("Request body too large")
    errcode = "M_FORBIDDEN" if exc.status == 403 else "M_UNKNOWN"
    return MatrixError(exc.status, errcode, exc.reason or "Request failed")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as `{"errcode", "error"}` JSON, add CORS, answer OPTIONS.

    Unexpected exceptions are logged with their traceback and become 500 M_UNKNOWN
    without leaking details. Client disconnects (CancelledError) propagate untouched.
    """
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
        _add_cors(response)
        return response
    try:
        response = await handler(request)
    except MatrixError as exc:
        response = error_response(exc)
    except DatabaseUnavailableError as exc:  # a PostgreSQL restart, say: retry later
        logger.warning("Database unavailable serving %s %s: %s", request.method, request.path, exc)
        response = error_response(
            MatrixError(503, "M_UNKNOWN", "The database is unavailable; try again")
        )
    except UnstorableValueError as exc:  # e.g. U+0000 in a string, on PostgreSQL
        logger.info("Refused an unstorable value: %s", exc)
        response = error_response(invalid_param("Text must not contain U+0000"))
    except web.HTTPException as exc:
        error = _from_http_exception(exc)
        if error is None:
            _add_cors(exc)
            raise
        response = error_response(error)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = exc.headers.get("Allow", "")
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("Unhandled error serving %s %s", request.method, request.path)
        response = error_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))
    _add_cors(response)
    return response


# --------------------------------------------------------------------------- input

_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _check_tree(value: Any, max_depth: int) -> None:
    """Reject nesting deeper than max_depth and strings that are not encodable UTF-8.

    Iterative, so hostile input cannot exhaust the Python stack here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("string contains an unpaired surrogate")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if _SURROGATE.search(key):
                        raise ValueError("key contains an unpaired surrogate")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def parse_json_bytes(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strictly parse JSON bytes; raise M_NOT_JSON for anything not re-encodable JSON."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
        _check_tree(value, max_depth)
    except RecursionError:
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON: nested too deeply") from None
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        reason = str(exc).splitlines()[0][:200]
        raise MatrixError(400, "M_NOT_JSON", f"Content not JSON: {reason}") from None
    return value


def _body_limit(request: web.Request) -> int:
    return request.config_dict.get(MAX_BODY_KEY, DEFAULT_MAX_BODY)


async def body_chunks(request: web.Request, size: int = 65536) -> AsyncIterator[bytes]:
    """The request body in chunks of at most `size` bytes, as they arrive.

    A client that sends nothing more of its body for BODY_STALL_TIMEOUT_S gets 408
    (aiohttp then closes the connection, the body being unread): otherwise a body
    that stops short of its Content-Length held the connection, the request's task
    and all it had received (up to the body limit) for as long as the client liked."""
    while True:
        try:
            async with asyncio.timeout(BODY_STALL_TIMEOUT_S):
                chunk = await request.content.read(size)
        except TimeoutError:
            raise MatrixError(
                408,
                "M_UNKNOWN",
                f"Nothing more of the request body arrived for {BODY_STALL_TIMEOUT_S:.0f} s",
            ) from None
        if not chunk:
            return
        yield chunk


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The raw body, refusing (413 M_TOO_LARGE) more than `limit` bytes without buffering it."""
    limit = _body_limit(request) if limit is None else limit
    if request.content_length is not None and request.content_length > limit:
        raise too_large(f"Request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > limit:
            raise too_large(f"Request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_body(
    request: web.Request,
    *,
    limit: int | None = None,
    allow_empty: bool = False,
    max_depth: int = MAX_JSON_DEPTH,
) -> dict[str, Any]:
    """The request body as a JSON object.

    Errors: 413 M_TOO_LARGE over `limit` (default config.max_request_body); 400 M_NOT_JSON
    for invalid UTF-8/JSON, lone surrogates, NaN/Infinity, out-of-range numbers or too
    deep nesting; 400 M_BAD_JSON when the top level is not an object. With
    `allow_empty`, an empty body reads as {} (endpoints whose body is optional).
    """
    body = await read_body(request, limit)
    if allow_empty and not body.strip():
        return {}
    value = parse_json_bytes(body, max_depth=max_depth)
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object")
    return value


def path_param(
    request: web.Request, name: str, validator: Callable[[str], T] | None = None
) -> T | str:
    """A URL path segment (already percent-decoded), checked by `validator`.

    A validator's ValueError becomes 400 M_INVALID_PARAM naming the parameter.
    """
    try:
        value = request.match_info[name]
    except KeyError:
        raise missing_param(f"Missing path parameter: {name}") from None
    return _validate(name, value, validator)


def query_param(
    request: web.Request,
    name: str,
    validator: Callable[[str], T] | None = None,
    *,
    default: Any = None,
    required: bool = False,
) -> Any:
    """A query string parameter, checked by `validator`; `default` when absent."""
    if name not in request.query:
        if required:
            raise missing_param(f"Missing query parameter: {name}")
        return default
    return _validate(name, request.query[name], validator)


def _validate(name: str, value: str, validator: Callable[[str], T] | None) -> T | str:
    if _SURROGATE.search(value) or "\x00" in value:
        raise invalid_param(f"Invalid {name}: bad characters")
    if validator is None:
        return value
    try:
        return validator(value)
    except ValueError as exc:
        raise invalid_param(f"Invalid {name}: {exc}") from None


# --------------------------------------------------------------------------- peers


def listener_for_request(request: web.Request) -> ListenerConfig | None:
    """The configured listener whose socket received `request` (None in tests)."""
    listeners = request.config_dict.get(LISTENERS)
    if not listeners or request.transport is None:
        return None
    sockname = request.transport.get_extra_info("sockname")
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    return listeners.get(port) if port is not None else None


def client_ip(request: web.Request) -> str:
    """The requester's IP: X-Forwarded-For's first entry on `x_forwarded` listeners only.

    Elsewhere the header is ignored, since any client could forge it to dodge rate limits.
    """
    listener = listener_for_request(request)
    # The replication listener hears only this server's workers (secret checked), who
    # pass on their client's address.
    if listener is not None and (listener.x_forwarded or "replication" in listener.resources):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.remote or ""
