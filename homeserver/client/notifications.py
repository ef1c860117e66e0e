"""GET /notifications (from, limit, only=highlight)."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import PUSH_ACTIONS, PUSH_STORE, STORES, Mounts
from homeserver.client.auth import get_requester
from homeserver.http import json_response, query_param
from homeserver.push.notifications import DEFAULT_LIMIT, list_notifications

PREFIXES = ("/v3", "/r0")


def _token(value: str) -> int:
    if not value.lstrip("-").isdigit() or len(value) > 20:
        raise ValueError("unknown pagination token")
    return int(value)


def _limit(value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError("must be a non-negative integer")
    return int(value)


async def get_notifications(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    from_token = query_param(request, "from", _token)
    limit = query_param(request, "limit", _limit, default=DEFAULT_LIMIT)
    only = query_param(request, "only")
    app = request.config_dict
    body = await list_notifications(
        app[STORES],
        app[PUSH_STORE],
        app[PUSH_ACTIONS],
        requester.user_id,
        from_token=from_token,
        limit=limit,
        only_highlight=only == "highlight",
    )
    return json_response(body)


def setup(mounts: Mounts) -> None:
    for prefix in PREFIXES:
        mounts.client.router.add_get(f"{prefix}/notifications", get_notifications)
