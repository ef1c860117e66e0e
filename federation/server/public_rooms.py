"""GET/POST /_matrix/federation/v1/publicRooms: our published room directory.

Pagination tokens are the last room ID of the previous page (rooms are listed in room
ID order by the store); `filter.generic_search_term` matches name, topic and alias.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.server.auth_middleware import body_of
from federation.server.common import require_dict, stores_of
from federation.server.room_summary import room_summary
from homeserver.appstate import CONFIG
from homeserver.errors import MatrixError
from homeserver.http import json_response

MAX_LIMIT = 500


def _matches(chunk: dict[str, Any], term: str) -> bool:
    term = term.casefold()
    return any(
        isinstance(chunk.get(k), str) and term in chunk[k].casefold()
        for k in ("name", "topic", "canonical_alias")
    )


async def _list(request: web.Request, limit: int | None, since: str | None, term: str | None):
    if not request.config_dict[CONFIG].directory.room_list_search:
        return {"chunk": [], "total_room_count_estimate": 0}  # enable_room_list_search off
    stores = stores_of(request)
    total = await stores.rooms.count_public_rooms()
    chunk: list[dict[str, Any]] = []
    cursor = since
    exhausted = False
    while limit is None or len(chunk) < limit:
        page = await stores.rooms.get_public_room_ids(limit=MAX_LIMIT, since=cursor)
        if not page:
            exhausted = True
            break
        for room_id in page:
            cursor = room_id
            summary = await room_summary(stores, room_id)
            if term and not _matches(summary, term):
                continue
            chunk.append(summary)
            if limit is not None and len(chunk) >= limit:
                break
    body: dict[str, Any] = {"chunk": chunk, "total_room_count_estimate": total}
    if since:
        body["prev_batch"] = "p" + since
    more = not exhausted and limit is not None and len(chunk) >= limit and cursor is not None
    if (
        more
        and cursor is not None
        and await stores.rooms.get_public_room_ids(limit=1, since=cursor)
    ):
        body["next_batch"] = "n" + cursor
    return body


def _since(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("n", "p")):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid since token")
    return value[1:] if value.startswith("n") else None


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
    return max(0, min(limit, MAX_LIMIT))


async def get_public_rooms(request: web.Request) -> web.Response:
    body = await _list(
        request, _limit(request.query.get("limit")), _since(request.query.get("since")), None
    )
    return json_response(body)


async def post_public_rooms(request: web.Request) -> web.Response:
    req = require_dict(body_of(request))
    flt = req.get("filter") or {}
    if not isinstance(flt, dict):
        raise MatrixError(400, "M_BAD_JSON", "filter must be an object")
    term = flt.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_BAD_JSON", "generic_search_term must be a string")
    if isinstance(req.get("limit"), bool):
        raise MatrixError(400, "M_BAD_JSON", "limit must be an integer")
    body = await _list(request, _limit(req.get("limit")), _since(req.get("since")), term)
    return json_response(body)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/publicRooms", get_public_rooms)
    app.router.add_post("/v1/publicRooms", post_public_rooms)
