"""Simplified sliding sync (MSC4186), the API Element X and matrix-rust-sdk use:
POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import SLIDING_SYNC, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import MatrixError, invalid_param
from homeserver.http import json_response, query_param, read_json_body
from homeserver.sliding_sync.request import parse_request

PATH = "/unstable/org.matrix.simplified_msc3575/sync"


def _timeout(value: str) -> int:
    if not value.isdigit() or len(value) > 12:
        raise ValueError("expected milliseconds")
    return int(value)


async def sliding_sync(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    if requester.device_id is None:
        raise MatrixError(400, "M_UNKNOWN", "Sliding sync needs an access token with a device")
    body = await read_json_body(request, allow_empty=True)
    pos = query_param(request, "pos")
    if pos is not None and not isinstance(pos, str):
        raise invalid_param("pos must be a string")
    timeout = query_param(request, "timeout", _timeout, default=0)
    result = await request.config_dict[SLIDING_SYNC].sync(
        requester.user_id, requester.device_id, parse_request(body), pos, timeout
    )
    return json_response(result)


def setup(mounts: Mounts) -> None:
    mounts.client.router.add_post(PATH, sliding_sync)
