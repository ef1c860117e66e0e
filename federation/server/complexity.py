"""GET /_matrix/federation/unstable/rooms/{roomId}/complexity: how big a room is here.

Synapse's endpoint, asked by servers running `limit_remote_rooms` before one of their
users joins: `{"v1": current state events / 500}` (homeserver.rooms.complexity). As in
Synapse, any server may ask, but only about a room that is public (join rule) or
world-readable (history visibility); other rooms, rooms we are not joined to (whose
state we may hold stale, or not at all) and unknown rooms all answer the same 404
M_INVALID_PARAM, so the answer tells nothing of rooms the asker could not see anyway.
The measure is a bounded count of the current-state rows, never a read of the state.
"""

from __future__ import annotations

from aiohttp import web

from federation.server.common import room_id_param, stores_of
from homeserver.appstate import CONFIG
from homeserver.errors import MatrixError
from homeserver.http import json_response
from homeserver.rooms.complexity import room_complexity
from homeserver.storage import Stores

_VISIBILITY_TYPES = ("m.room.join_rules", "m.room.history_visibility")


async def _public_or_world_readable(stores: Stores, room_id: str) -> bool:
    ids = await stores.current_state.get_current_state_ids(room_id, _VISIBILITY_TYPES)
    events = await stores.events.get_events([v for (_t, sk), v in ids.items() if sk == ""])
    for event in events.values():
        if event.type == "m.room.join_rules" and event.content.get("join_rule") == "public":
            return True
        if (
            event.type == "m.room.history_visibility"
            and event.content.get("history_visibility") == "world_readable"
        ):
            return True
    return False


async def room_complexity_handler(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    stores = stores_of(request)
    ours = request.config_dict[CONFIG].server_name
    joined = ours in await stores.current_state.get_joined_hosts(room_id)
    if not joined or not await _public_or_world_readable(stores, room_id):
        raise MatrixError(404, "M_INVALID_PARAM", "Room not found")
    return json_response({"v1": await room_complexity(stores, room_id)})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/unstable/rooms/{room_id}/complexity", room_complexity_handler)
