"""GET /_matrix/client/v1/mutual_rooms (mutual_rooms.yaml, v1.19): the rooms both the
requester and another user are joined to, in room ID order, 100 per batch.

`from`/`next_batch` is the last room ID of the previous batch (opaque to clients), so
paging stays stable while memberships change.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from homeserver.appstate import STORES, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import invalid_param
from homeserver.http import json_response, query_param
from homeserver.ids import is_valid_user_id

BATCH_SIZE = 100


def encode_token(room_id: str) -> str:
    return base64.urlsafe_b64encode(room_id.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        room_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_param("Invalid batch token") from None
    if not room_id.startswith("!"):
        raise invalid_param("Invalid batch token")
    return room_id


async def get_mutual_rooms(request: web.Request) -> web.Response:
    return json_response(await _mutual_rooms(request, "from", "next_batch"))


async def get_mutual_rooms_unstable(request: web.Request) -> web.Response:
    """MSC2666's last unstable form (matrix-js-sdk's _unstable_getSharedRooms): the same
    answer with the token as `batch_token` / `next_batch_token`."""
    return json_response(await _mutual_rooms(request, "batch_token", "next_batch_token"))


async def _mutual_rooms(request: web.Request, from_key: str, next_key: str) -> dict[str, object]:
    requester = await get_requester(request)
    other = query_param(request, "user_id")
    if other is None:
        raise invalid_param("Missing 'user_id'")
    if not is_valid_user_id(other):
        raise invalid_param("The user ID provided was invalid")
    if other == requester.user_id:
        raise invalid_param("You cannot ask for mutual rooms with yourself")
    after = query_param(request, from_key, decode_token)
    stores = request.config_dict[STORES]
    mine = await stores.current_state.get_memberships_for_user(requester.user_id)
    theirs = await stores.current_state.get_memberships_for_user(other)
    joined = {m.room_id for m in mine if m.membership == "join"}
    shared = sorted(m.room_id for m in theirs if m.membership == "join" and m.room_id in joined)
    remaining = [r for r in shared if after is None or r > after]
    body: dict[str, object] = {"joined": remaining[:BATCH_SIZE], "count": len(shared)}
    if len(remaining) > BATCH_SIZE:
        body[next_key] = encode_token(remaining[BATCH_SIZE - 1])
    return body


def setup(mounts: Mounts) -> None:
    mounts.client.router.add_get("/v1/mutual_rooms", get_mutual_rooms)
    mounts.client.router.add_get(
        "/unstable/uk.half-shot.msc2666/user/mutual_rooms", get_mutual_rooms_unstable
    )
