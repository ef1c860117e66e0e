"""GET /_matrix/federation/v1/hierarchy/{roomId}: a space and its children we know.

The requested room's summary with its `children_state` (the stripped `m.space.child`
events), and in `children` a summary (with its own `children_state`) of every room of
the subtree we know that the requesting server may see (its users joined, world-readable
or open to join/knock), walked breadth first up to MAX_SUBTREE_ROOMS rooms: the asking
server learns the whole tree below in one request. Known children it may not see are
listed in `inaccessible_children`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.acl import room_acl, server_allowed
from federation.server.auth_middleware import origin_of
from federation.server.common import room_gate, room_id_param, stores_of
from federation.server.room_summary import room_summary
from federation.server.visibility import server_can_read_room
from homeserver.errors import not_found
from homeserver.http import json_response
from homeserver.storage import Stores

# Rooms of the subtree described in one answer (each costs a few state reads).
MAX_SUBTREE_ROOMS = 100


async def _children_state(stores: Stores, room_id: str) -> list[dict[str, Any]]:
    ids = await stores.current_state.get_current_state_ids(room_id, ["m.space.child"])
    events = await stores.events.get_events(ids.values())
    out = []
    for ev in sorted(events.values(), key=lambda e: e.state_key or ""):
        if not isinstance(ev.content.get("via"), list) or not ev.content["via"]:
            continue  # a child without `via` has been removed
        out.append(
            {
                "type": ev.type,
                "state_key": ev.state_key,
                "content": ev.content,
                "sender": ev.sender,
                "origin_server_ts": ev.origin_server_ts,
            }
        )
    return out


async def _accessible(stores: Stores, room_id: str, origin: str) -> bool:
    if await stores.rooms.get_room_version(room_id) is None:
        return False
    if not server_allowed(await room_acl(stores, room_id), origin):
        return False
    if await server_can_read_room(stores, room_id, origin):
        return True
    summary = await room_summary(stores, room_id)
    return summary["join_rule"] in ("public", "knock", "knock_restricted")


async def hierarchy(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    await room_gate(request, room_id, must_see=False)
    stores = stores_of(request)
    origin = origin_of(request)
    if not await _accessible(stores, room_id, origin):
        raise not_found("Room is not accessible")
    suggested_only = request.query.get("suggested_only", "false") == "true"
    room = await room_summary(stores, room_id)
    room["children_state"] = await _children_state(stores, room_id)
    if suggested_only:
        room["children_state"] = [
            c for c in room["children_state"] if c["content"].get("suggested") is True
        ]
    children: list[dict[str, Any]] = []
    inaccessible: list[str] = []
    seen = {room_id}
    queue = [c["state_key"] for c in room["children_state"]]
    while queue and len(children) < MAX_SUBTREE_ROOMS:
        child_id = queue.pop(0)
        if child_id in seen:
            continue
        seen.add(child_id)
        if await _accessible(stores, child_id, origin):
            summary = await room_summary(stores, child_id)
            summary["children_state"] = await _children_state(stores, child_id)
            if suggested_only:
                summary["children_state"] = [
                    c for c in summary["children_state"] if c["content"].get("suggested") is True
                ]
            children.append(summary)
            queue.extend(c["state_key"] for c in summary["children_state"])
        elif await stores.rooms.get_room_version(child_id) is not None:
            inaccessible.append(child_id)
    return json_response(
        {"room": room, "children": children, "inaccessible_children": inaccessible}
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/hierarchy/{room_id}", hierarchy)
