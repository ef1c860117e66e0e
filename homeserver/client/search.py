"""POST /search (search.yaml): server-side search of room events; see
homeserver.search.service for what is searched and shown."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import CONFIG, SEARCH, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import MatrixError
from homeserver.http import json_response, query_param, read_json_body


async def search(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    if not request.config_dict[CONFIG].enable_search:
        raise MatrixError(400, "M_UNKNOWN", "Search is disabled on this homeserver")  # Synapse's
    body = await read_json_body(request)
    result = await request.config_dict[SEARCH].search(
        requester.user_id, requester.device_id, body, query_param(request, "next_batch")
    )
    return json_response(result)


def setup(mounts: Mounts) -> None:
    for prefix in ("/v3", "/r0"):
        mounts.client.router.add_post(prefix + "/search", search)
