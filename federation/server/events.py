"""Reading the room graph: backfill, get_missing_events, state, state_ids, event,
event_auth, timestamp_to_event.

Every endpoint passes the room gate (room known, ACL, origin has a user joined or the
room is world-readable) and filters events through the history visibility rules for
servers (invisible events go out redacted). Events redacted here are served pruned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from federation.appkeys import ROOM_STATE
from federation.server.auth_middleware import body_of, origin_of
from federation.server.common import int_query, require_dict, room_gate, room_id_param, stores_of
from federation.server.visibility import filter_events_for_server
from homeserver.appstate import CONFIG, ROOM_READ_STORE
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import Event, RoomVersion
from homeserver.graph.auth_chain import compute_auth_chain
from homeserver.http import json_response, path_param
from homeserver.storage import Stores

MAX_BACKFILL = 100
MAX_MISSING = 20


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _load(stores: Stores, ids: Iterable[str]) -> dict[str, Event]:
    return await stores.events.get_events(list(ids), redact_if_needed=True)


async def _visible_pdus(request: web.Request, events: list[Event]) -> list[dict[str, Any]]:
    filtered = await filter_events_for_server(stores_of(request), origin_of(request), events)
    return [e.pdu for e in filtered]


def _transaction(request: web.Request, pdus: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "origin": request.config_dict[CONFIG].server_name,
        "origin_server_ts": _now_ms(),
        "pdus": pdus,
    }


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"{name} must be a list of strings")
    return value


async def backfill(request: web.Request) -> web.Response:
    """Events preceding (and including) `v`, newest first, walking prev_events."""
    room_id = room_id_param(request)
    await room_gate(request, room_id)
    starts = request.query.getall("v", [])
    if not starts:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing v")
    limit = int_query(request, "limit", 10, 0, MAX_BACKFILL)
    stores = stores_of(request)
    found: dict[str, Event] = {}
    frontier = list(dict.fromkeys(starts))
    while frontier and len(found) < limit:
        loaded = await _load(stores, [e for e in frontier if e not in found])
        nxt: list[str] = []
        for eid in sorted(loaded, key=lambda e: -loaded[e].depth):
            ev = loaded[eid]
            if ev.room_id != room_id or len(found) >= limit:
                continue
            found[eid] = ev
            nxt.extend(p for p in ev.prev_event_ids if p not in found)
        frontier = list(dict.fromkeys(nxt))
    events = sorted(found.values(), key=lambda e: (-e.depth, e.event_id))
    return json_response(_transaction(request, await _visible_pdus(request, events)))


async def get_missing_events(request: web.Request) -> web.Response:
    """Events between `earliest_events` and `latest_events` (exclusive), oldest first."""
    room_id = room_id_param(request)
    await room_gate(request, room_id)
    body = require_dict(body_of(request))
    earliest = set(_str_list(body.get("earliest_events", []), "earliest_events"))
    latest = _str_list(body.get("latest_events", []), "latest_events")
    limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
    if not isinstance(limit, int) or not isinstance(min_depth, int):
        raise MatrixError(400, "M_BAD_JSON", "limit and min_depth must be integers")
    limit = max(0, min(limit, MAX_MISSING))
    stores = stores_of(request)
    seen = set(latest) | earliest
    found: dict[str, Event] = {}
    heads = await _load(stores, latest)
    frontier = [p for ev in heads.values() if ev.room_id == room_id for p in ev.prev_event_ids]
    while frontier and len(found) < limit:
        frontier = [e for e in dict.fromkeys(frontier) if e not in seen]
        seen.update(frontier)
        loaded = await _load(stores, frontier)
        nxt: list[str] = []
        for eid in frontier:
            ev = loaded.get(eid)
            if ev is None or ev.room_id != room_id or ev.depth < min_depth:
                continue
            if len(found) >= limit:
                break
            found[eid] = ev
            nxt.extend(ev.prev_event_ids)
        frontier = nxt
    events = sorted(found.values(), key=lambda e: (e.depth, e.event_id))
    return json_response({"events": await _visible_pdus(request, events)})


async def _state_before(
    request: web.Request, room_id: str, version: RoomVersion
) -> tuple[list[str], list[str]]:
    """(state IDs before `event_id`, their auth chain IDs); 404 for unknown events."""
    event_id = request.query.get("event_id")
    if not event_id:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing event_id")
    stores = stores_of(request)
    event = await stores.events.get_event(event_id)
    if event is None or event.room_id != room_id or await stores.events.is_outlier(event_id):
        raise not_found("Unknown event")
    (visible,) = await filter_events_for_server(stores, origin_of(request), [event])
    if visible is not event:
        raise forbidden("Your server may not see this event")
    if event.prev_event_ids:
        try:
            state, _ = await request.config_dict[ROOM_STATE].state_after_events(
                version, event.prev_event_ids
            )
        except LookupError:
            raise not_found("State at this event is unknown") from None
    else:
        state = {}
    state_ids = sorted(state.values())
    chain = await compute_auth_chain(state_ids, request.config_dict[ROOM_STATE].fetch_events)
    return state_ids, sorted(chain)


async def state_ids(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    version = await room_gate(request, room_id)
    ids, chain = await _state_before(request, room_id, version)
    return json_response({"pdu_ids": ids, "auth_chain_ids": chain})


async def state(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    version = await room_gate(request, room_id)
    ids, chain = await _state_before(request, room_id, version)
    stores = stores_of(request)
    events = await _load(stores, [*ids, *chain])
    return json_response(
        {
            "pdus": [events[e].pdu for e in ids if e in events],
            "auth_chain": [events[e].pdu for e in chain if e in events],
        }
    )


async def get_event(request: web.Request) -> web.Response:
    event_id = path_param(request, "event_id")
    stores = stores_of(request)
    event = (await _load(stores, [event_id])).get(event_id)
    if event is None:
        raise not_found("Unknown event")
    await room_gate(request, event.room_id)
    return json_response(_transaction(request, await _visible_pdus(request, [event])))


async def event_auth(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    await room_gate(request, room_id)
    event_id = path_param(request, "event_id")
    stores = stores_of(request)
    event = await stores.events.get_event(event_id)
    if event is None or event.room_id != room_id:
        raise not_found("Unknown event")
    chain = await compute_auth_chain([event_id], request.config_dict[ROOM_STATE].fetch_events)
    events = await _load(stores, sorted(chain))
    return json_response({"auth_chain": [e.pdu for e in events.values()]})


def _ts_query(request: web.Request) -> int:
    raw = request.query.get("ts")
    if raw is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing ts")
    if not raw.isdigit() or len(raw) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds")
    return int(raw)


async def timestamp_to_event(request: web.Request) -> web.Response:
    """The timeline event closest to `ts` in direction `dir` that we hold (the same
    lookup as the client API; the peer decides whether to ask elsewhere)."""
    room_id = room_id_param(request)
    await room_gate(request, room_id)
    ts = _ts_query(request)
    direction = request.query.get("dir")
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
    found = await request.config_dict[ROOM_READ_STORE].event_closest_to_ts(
        room_id, ts, "f" if direction == "f" else "b"
    )
    if found is None:
        raise not_found(f"Unable to find event from {ts} in direction {direction}")
    return json_response({"event_id": found[0], "origin_server_ts": found[1]})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/backfill/{room_id}", backfill)
    app.router.add_post("/v1/get_missing_events/{room_id}", get_missing_events)
    app.router.add_get("/v1/state/{room_id}", state)
    app.router.add_get("/v1/state_ids/{room_id}", state_ids)
    app.router.add_get("/v1/event/{event_id}", get_event)
    app.router.add_get("/v1/event_auth/{room_id}/{event_id}", event_auth)
    app.router.add_get("/v1/timestamp_to_event/{room_id}", timestamp_to_event)
