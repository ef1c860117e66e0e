"""Filter endpoints (filter.yaml) and the `filter` parameter of /sync (id or inline JSON)."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import SYNC
from homeserver.client.auth import get_requester
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.http import json_response, parse_json_bytes, path_param, read_json_body
from homeserver.storage.cache import LruCache
from homeserver.sync.filters import SyncFilter, parse_filter

MAX_INLINE_FILTER = 64 * 1024
# Every /sync names its filter again (inline JSON, or the ID of a saved one, which never
# changes once created), and parsing it was ~7% of a long-poll's CPU with 1,000 clients.
# Parsed filters are immutable, so they are kept: saved ones by the filter store, inline
# ones here, keyed by their text (a pure function of it), up to PARSED_FILTER_CACHE;
# texts longer than CACHED_INLINE_MAX are parsed every time (keys stay under ~2 MB).
PARSED_FILTER_CACHE = 512
CACHED_INLINE_MAX = 4096
_inline_filters: LruCache[str, SyncFilter] = LruCache(PARSED_FILTER_CACHE, name="inline_filters")


def _own_user(request: web.Request, requester_user: str) -> str:
    user_id = path_param(request, "userId")
    if user_id != requester_user:
        raise forbidden("Cannot access filters of other users")
    return user_id


async def post_filter(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _own_user(request, requester.user_id)
    body = await read_json_body(request, limit=MAX_INLINE_FILTER)
    parse_filter(body)  # refuse what could not be applied later
    filter_id = await request.config_dict[SYNC].filters.add_filter(user_id, body)
    return json_response({"filter_id": str(filter_id)})


def _filter_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise ValueError("not a filter ID")
    return int(text)


async def get_filter(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _own_user(request, requester.user_id)
    try:
        filter_id = _filter_id(path_param(request, "filterId"))
    except ValueError:
        raise not_found("No such filter") from None
    definition = await request.config_dict[SYNC].filters.get_filter(user_id, filter_id)
    if definition is None:
        raise not_found("No such filter")
    return json_response(definition)


async def resolve_filter(request: web.Request, user_id: str, text: str | None) -> SyncFilter:
    """The /sync `filter` query parameter: a saved filter's ID or an inline JSON object."""
    if text is None or text == "":
        return SyncFilter()
    if text.lstrip().startswith("{"):
        cached = _inline_filters.get(text)
        if cached is not None:
            return cached
        if len(text) > MAX_INLINE_FILTER:
            raise MatrixError(400, "M_INVALID_PARAM", "Inline filter too large")
        try:
            definition = parse_json_bytes(text.encode("utf-8"))
        except MatrixError:
            raise MatrixError(400, "M_BAD_JSON", "Inline filter is not valid JSON") from None
        parsed = parse_filter(definition)
        if len(text) <= CACHED_INLINE_MAX:
            _inline_filters.set(text, parsed)
        return parsed
    try:
        filter_id = _filter_id(text)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "filter must be an ID or a JSON object") from None
    saved = await request.config_dict[SYNC].filters.get_parsed(user_id, filter_id, parse_filter)
    if saved is None:
        raise MatrixError(400, "M_INVALID_PARAM", "No such filter")
    return saved


def add_routes(app: web.Application) -> None:
    for prefix in ("/v3", "/r0"):
        app.router.add_post(prefix + "/user/{userId}/filter", post_filter)
        app.router.add_get(prefix + "/user/{userId}/filter/{filterId}", get_filter)
