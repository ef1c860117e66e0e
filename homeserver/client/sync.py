"""GET /sync (sync.yaml). Also the sync area's `setup`, which mounts the related
filter, ephemeral and account-data endpoints."""

from __future__ import annotations

from aiohttp import web

import homeserver.client.account_data as account_data_api
import homeserver.client.ephemeral as ephemeral_api
import homeserver.client.filters as filters_api
from homeserver.appstate import REPLICATION, SYNC, Mounts
from homeserver.client.auth import get_requester
from homeserver.ephemeral.presence import STATES
from homeserver.errors import invalid_param
from homeserver.http import json_response, query_param
from homeserver.sync.builder import SyncRequest
from homeserver.sync.tokens import StreamToken


def _timeout(text: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise ValueError("must be a non-negative integer")
    return int(text)


def _bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise ValueError("must be true or false")


def _presence(text: str) -> str:
    if text not in STATES:
        raise ValueError("must be online, offline or unavailable")
    return text


_PERSISTED = ("events", "receipts", "account_data")


async def get_sync(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    since_text = query_param(request, "since")
    since = None if since_text in (None, "") else StreamToken.decode(since_text)
    timeout_ms = query_param(request, "timeout", _timeout, default=0)
    full_state = query_param(request, "full_state", _bool, default=False)
    set_presence = query_param(request, "set_presence", _presence, default="online")
    use_state_after = query_param(request, "use_state_after", _bool, default=False)
    flt = await filters_api.resolve_filter(
        request, requester.user_id, query_param(request, "filter")
    )
    notifier = request.config_dict[SYNC].notifier
    if since is not None and since.is_after(notifier.current):
        # Ahead of us on a persisted stream: not a token we gave out (typing restarts).
        # (presence is written behind and typing never: after a crash or restart those
        # positions may be behind a token we gave out; build() clamps them.)
        def ahead() -> bool:
            current = notifier.current
            return any(getattr(since, s) > getattr(current, s) for s in _PERSISTED)

        follower = getattr(request.config_dict.get(REPLICATION), "follower", None)
        if ahead() and follower is not None:
            # A worker: another process of the deployment may have given it out (this
            # one just restarted, or is a moment behind): catch up first (bounded).
            await follower.wait_until(lambda: not ahead())
        if ahead():
            raise invalid_param("Unknown since token")
    req = SyncRequest(
        requester.user_id, requester.device_id, flt, since, full_state, use_state_after
    )
    response = await request.config_dict[SYNC].sync(req, timeout_ms, set_presence)
    return json_response(response)


def setup(mounts: Mounts) -> None:
    app = mounts.client
    for prefix in ("/v3", "/r0"):
        app.router.add_get(prefix + "/sync", get_sync)
    filters_api.add_routes(app)
    ephemeral_api.add_routes(app)
    account_data_api.add_routes(app)
