"""X-Matrix authentication of every inbound federation request.

The signature covers the method, the request target exactly as received
(`request.raw_path`: path and query, percent-encoding untouched), the origin, the
destination (must be us) and the JSON body. A request with no valid signature gets
401 M_UNAUTHORIZED. The verified origin and parsed body are kept on the request for
handlers: `origin_of(request)`, `body_of(request)`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from federation.appkeys import KEYRING, ORIGIN_LIMITS
from federation.auth import XMatrixAuth, parse_x_matrix, verify_request
from federation.keyring import KeyringError
from homeserver.appstate import CONFIG
from homeserver.errors import MatrixError
from homeserver.http import REQUESTER_KEY, Handler, parse_json_bytes, read_body

log = logging.getLogger(__name__)

ORIGIN = "fed_origin"
BODY = "fed_body"

# Paths under /_matrix/federation the spec serves without authentication.
# (/3pid/onbind is called by identity servers, which have no server keys.)
UNAUTHENTICATED_SUFFIXES = ("/v1/version", "/v1/openid/userinfo", "/v1/3pid/onbind")


def unauthorized(message: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", message)


def origin_of(request: web.Request) -> str:
    """The authenticated origin server of the request."""
    return request[ORIGIN]


def body_of(request: web.Request) -> Any:
    """The parsed JSON body (None when the request had none)."""
    return request.get(BODY)


def _is_unauthenticated(request: web.Request) -> bool:
    return request.path.startswith("/_matrix/federation") and request.path.endswith(
        UNAUTHENTICATED_SUFFIXES
    )


async def _verify_one(request: web.Request, auth: XMatrixAuth, content: Any, our_name: str) -> bool:
    if auth.destination is not None and auth.destination != our_name:
        return False
    try:
        key = await request.config_dict[KEYRING].get_verify_key(
            auth.origin, auth.key_id, int(time.time() * 1000)
        )
    except (KeyringError, ValueError) as e:
        log.info("no key %s for %s: %s", auth.key_id, auth.origin, e)
        return False
    return verify_request(auth, request.method, request.raw_path, our_name, content, key)


@web.middleware
async def x_matrix_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate the request (see module docstring) before any handler runs."""
    if request.method == "OPTIONS" or _is_unauthenticated(request):
        return await handler(request)
    if getattr(request.match_info, "http_exception", None) is not None:
        return await handler(request)  # no such endpoint: 404/405 without auth
    raw = await read_body(request) if request.can_read_body else b""
    content = parse_json_bytes(raw) if raw.strip() else None
    headers = request.headers.getall("Authorization", [])
    if not headers:
        raise unauthorized("Missing Authorization headers")
    our_name = request.config_dict[CONFIG].server_name
    for header in headers:
        try:
            auth = parse_x_matrix(header)
        except ValueError:
            if header.strip().lower().startswith("x-matrix "):
                # As Synapse: a malformed X-Matrix header (e.g. an origin whose port is
                # not a number) is a bad request, not a failed signature.
                raise MatrixError(400, "M_UNAUTHORIZED", "Malformed Authorization header") from None
            continue
        if await _verify_one(request, auth, content, our_name):
            request[ORIGIN] = auth.origin
            request[REQUESTER_KEY] = auth.origin  # for the request log
            request[BODY] = content
            limiter = request.config_dict.get(ORIGIN_LIMITS)
            if limiter is None:  # rate limits off (rc_enabled: false)
                return await handler(request)
            async with limiter.hold(auth.origin):  # rc_federation
                return await handler(request)
    raise unauthorized("Invalid X-Matrix signature")
