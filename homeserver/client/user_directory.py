"""POST /user_directory/search (users.yaml)."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import USER_DIRECTORY, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.validate import optional_int, require_str
from homeserver.errors import invalid_param
from homeserver.http import json_response, read_json_body
from homeserver.profiles.directory import DEFAULT_LIMIT, MAX_LIMIT

MAX_TERM_LEN = 1000


async def search(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    term = require_str(body, "search_term", max_len=MAX_TERM_LEN)
    limit = optional_int(body, "limit", default=DEFAULT_LIMIT)
    assert limit is not None
    if limit < 0:
        raise invalid_param("'limit' must not be negative")
    limit = min(limit, MAX_LIMIT)
    result = await request.config_dict[USER_DIRECTORY].search(requester.user_id, term, limit)
    return json_response({"results": result.results, "limited": result.limited})


def setup(mounts: Mounts) -> None:
    for prefix in ("/v3", "/r0"):
        mounts.client.router.add_post(prefix + "/user_directory/search", search)
