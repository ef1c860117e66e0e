"""Room events: send, redact, /event, /context, /messages, /timestamp_to_event."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web

from homeserver.appstate import (
    NOTIFIER,
    PRESENCE,
    RATE_LIMITERS,
    ROOM_DIRECTORY,
    ROOM_READER,
    ROOM_SENDER,
    STORES,
)
from homeserver.client.auth import Requester, get_requester, massaged_ts
from homeserver.client.delayed_events import schedule_if_delayed
from homeserver.client.validate import event_content, optional_str
from homeserver.errors import MatrixError, not_found
from homeserver.http import json_response, query_param, read_json_body
from homeserver.ids import validate_room_id
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.pagination import RoomToken
from homeserver.rooms.sending import Txn

from .room_services import (
    add_routes,
    event_id_param,
    event_type_param,
    room_id_param,
    room_token,
    txn_id_param,
)

DEFAULT_LIMIT = 10
INITIAL_SYNC_LIMIT = 20
MAX_INITIAL_SYNC_ROOMS = 500
# Peeking: events per answer, and the longest a peek may wait.
PEEK_LIMIT = 50
MAX_PEEK_TIMEOUT_MS = 30_000
MAX_LIMIT = 1000
T = TypeVar("T")


def _limit(value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError("must be a non-negative integer")
    return min(int(value), MAX_LIMIT)


def _direction(value: str) -> str:
    if value not in ("b", "f"):
        raise ValueError("must be 'b' or 'f'")
    return value


def _timestamp(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise ValueError("must be a timestamp in milliseconds")
    return int(value)


async def _once_per_txn(
    request: web.Request,
    requester: Requester,
    txn_id: str,
    send: Callable[[Txn], Awaitable[str]],
) -> web.Response:
    """Answer `{"event_id": ...}` for a client transaction, sending at most once.

    A retried transaction ID answers the event it already produced, without sending
    again or spending the message rate limit; only a new one is rate-limited and sent.
    """
    txn = (requester.user_id, requester.device_id, txn_id)
    existing = await request.config_dict[STORES].transactions.get_client_txn(*txn)
    if existing is not None:
        return json_response({"event_id": existing})
    request.config_dict[RATE_LIMITERS].check("message", requester.user_id)
    return json_response({"event_id": await send(txn)})


def _txn_or_new(request: web.Request) -> str:
    """The path's transaction ID, or (for the r0-era POST forms without one, which
    Synapse still serves) a fresh one: each such request sends a new event."""
    if "txn_id" in request.match_info:
        return txn_id_param(request)
    return "post." + secrets.token_urlsafe(18)


async def send_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    event_type = event_type_param(request)
    txn_id = _txn_or_new(request)
    content = event_content(await read_json_body(request))
    delayed = await schedule_if_delayed(
        request, requester, room_id, event_type, None, content, txn_id
    )
    if delayed is not None:
        return delayed
    sender = request.config_dict[ROOM_SENDER]
    response = await _once_per_txn(
        request,
        requester,
        txn_id,
        lambda txn: sender.send_message(
            room_id, requester.user_id, event_type, content, txn, massaged_ts(request, requester)
        ),
    )
    await request.config_dict[PRESENCE].bump_active(requester.user_id)  # idle -> online
    return response


async def redact_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    event_id = event_id_param(request)
    txn_id = _txn_or_new(request)
    body = await read_json_body(request, allow_empty=True)
    reason = optional_str(body, "reason", max_len=4096)
    sender = request.config_dict[ROOM_SENDER]
    return await _once_per_txn(
        request,
        requester,
        txn_id,
        lambda txn: sender.redact(room_id, requester.user_id, event_id, reason, txn),
    )


async def get_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    event_id = event_id_param(request)
    event = await request.config_dict[ROOM_READER].event(
        room_id, requester.user_id, requester.device_id, event_id
    )
    return json_response(event)


async def get_context(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    event_id = event_id_param(request)
    limit = query_param(request, "limit", _limit, default=DEFAULT_LIMIT)
    event_filter = RoomEventFilter.from_query(query_param(request, "filter"))
    body = await request.config_dict[ROOM_READER].context(
        room_id,
        requester.user_id,
        requester.device_id,
        event_id,
        limit=limit,
        event_filter=event_filter,
    )
    return json_response(body)


async def get_messages(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    from_token = query_param(request, "from", room_token)
    to_token = query_param(request, "to", room_token)
    direction: Any = query_param(request, "dir", _direction, default="b")
    limit = query_param(request, "limit", _limit, default=DEFAULT_LIMIT)
    event_filter = RoomEventFilter.from_query(query_param(request, "filter"))
    body = await request.config_dict[ROOM_READER].messages(
        room_id,
        requester.user_id,
        requester.device_id,
        from_token=from_token,
        to_token=to_token,
        direction=direction,
        limit=limit,
        event_filter=event_filter,
    )
    return json_response(body)


async def get_event_by_id(request: web.Request) -> web.Response:
    """GET /events/{eventId} (deprecated, still used by older clients and bots): the
    event if the user may see it, under the same rules as /rooms/{id}/event; 404 else."""
    requester = await get_requester(request)
    event_id = event_id_param(request, "event_id")
    event = await request.config_dict[STORES].events.get_event(event_id)
    if event is None:
        raise not_found("Event not found.")
    body = await request.config_dict[ROOM_READER].event(
        event.room_id, requester.user_id, requester.device_id, event_id
    )
    return json_response(body)


def _timeout_ms(value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError("must be a non-negative integer")
    return min(int(value), MAX_PEEK_TIMEOUT_MS)


async def peek_events(request: web.Request) -> web.Response:
    """GET /events?room_id= (deprecated peeking): new events of one room after `from`,
    waiting up to `timeout` ms for some, with /messages' access (an outsider peeks
    world-readable rooms only). Without `room_id`, the global stream of every joined
    room (older clients and bots; not for guests, as in Synapse)."""
    requester = await get_requester(request)
    room_id = query_param(request, "room_id", validate_room_id)
    if room_id is None:
        if requester.is_guest:
            raise MatrixError(400, "M_UNKNOWN", "Guest users must specify room_id param")
        return await _global_events(request, requester)
    reader = request.config_dict[ROOM_READER]
    await reader.access(room_id, requester.user_id)
    notifier = request.config_dict[NOTIFIER]
    start = query_param(request, "from", room_token)
    if start is None:
        start = RoomToken(notifier.current.events)
    timeout = query_param(request, "timeout", _timeout_ms, default=0)

    async def read() -> dict[str, Any]:
        return await reader.messages(
            room_id,
            requester.user_id,
            requester.device_id,
            from_token=start,
            to_token=None,
            direction="f",
            limit=PEEK_LIMIT,
            event_filter=RoomEventFilter.from_query(None),
        )

    body = await _long_poll(
        notifier, requester.user_id, lambda: [room_id], timeout, read, lambda b: b["chunk"]
    )
    return json_response(
        {"chunk": body["chunk"], "start": start.encode(), "end": body.get("end", start.encode())}
    )


async def _global_events(request: web.Request, requester: Requester) -> web.Response:
    """The deprecated global event stream: new events of the user's joined rooms after
    `from`. The answer's `end` covers exactly what was read: the notifier position is
    taken before the read and nothing beyond it is returned, so an event that commits
    meanwhile comes in the next call, never lost, never twice."""
    reader = request.config_dict[ROOM_READER]
    notifier = request.config_dict[NOTIFIER]
    start = query_param(request, "from", room_token)
    timeout = query_param(request, "timeout", _timeout_ms, default=0)
    if start is None:
        start = RoomToken(notifier.current.events)
    after = start.stream

    async def read() -> tuple[list[dict[str, Any]], int]:
        upto = notifier.current.events
        if upto <= after:
            return [], after
        return await reader.event_stream(
            requester.user_id, requester.device_id, after, upto, PEEK_LIMIT
        )

    state = request.config_dict[STORES].current_state
    chunk, end = await _long_poll(
        notifier,
        requester.user_id,
        lambda: state.get_rooms_for_user(requester.user_id),
        timeout,
        read,
        lambda result: result[0],
    )
    return json_response(
        {"chunk": chunk, "start": start.encode(), "end": RoomToken(max(end, after)).encode()}
    )


async def _long_poll(
    notifier: Any,
    user_id: str,
    rooms: Callable[[], Iterable[str] | Awaitable[Iterable[str]]],
    timeout_ms: int,
    read: Callable[[], Awaitable[T]],
    found: Callable[[T], Any],
) -> T:
    """`read()` until it `found` something or `timeout_ms` passed, reading again each
    time the notifier wakes the user or one of their rooms. A wake that brings nothing
    this endpoint shows (another stream, an event the user may not see, a worker
    catching up on writes older than `from`) waits on, not answered empty at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_ms / 1000
    while True:
        listening = rooms()
        if inspect.isawaitable(listening):
            listening = await listening
        with notifier.listen(user_id, listening) as listener:
            result = await read()
            remaining = deadline - loop.time()
            if found(result) or remaining <= 0 or not await listener.wait(remaining):
                return result


async def _room_snapshot(
    request: web.Request, requester: Requester, room_id: str, limit: int
) -> dict[str, Any]:
    """One room as the deprecated initialSync shows it: the latest `limit` messages,
    the state and the user's membership, with the access of /messages."""
    reader = request.config_dict[ROOM_READER]
    access = await reader.access(room_id, requester.user_id)
    messages = await reader.messages(
        room_id,
        requester.user_id,
        requester.device_id,
        from_token=None,
        to_token=None,
        direction="b",
        limit=limit,
        event_filter=RoomEventFilter.from_query(None),
    )
    body: dict[str, Any] = {
        "room_id": room_id,
        "messages": {
            "chunk": list(reversed(messages["chunk"])),
            "start": messages.get("end", messages["start"]),
            "end": messages["start"],
        },
        "state": await reader.state(room_id, requester.user_id, requester.device_id),
        "presence": [],
        "receipts": [],
        "account_data": [],
        "visibility": await request.config_dict[ROOM_DIRECTORY].get_visibility(room_id),
    }
    if access.membership is not None:
        body["membership"] = access.membership
    return body


async def room_initial_sync(request: web.Request) -> web.Response:
    """GET /rooms/{roomId}/initialSync (deprecated; what Element uses to preview a
    world-readable room)."""
    requester = await get_requester(request)
    room_id = room_id_param(request)
    limit = query_param(request, "limit", _limit, default=INITIAL_SYNC_LIMIT)
    return json_response(await _room_snapshot(request, requester, room_id, limit))


async def initial_sync(request: web.Request) -> web.Response:
    """GET /initialSync (deprecated; older bots): every room the user is joined to
    (at most MAX_INITIAL_SYNC_ROOMS), each as /rooms/{id}/initialSync shows it, and an
    `end` token to continue from with /events or /sync."""
    requester = await get_requester(request)
    limit = query_param(request, "limit", _limit, default=INITIAL_SYNC_LIMIT)
    notifier = request.config_dict[NOTIFIER]
    end = notifier.current.encode()
    joined = await request.config_dict[STORES].current_state.get_rooms_for_user(requester.user_id)
    rooms = []
    for room_id in sorted(joined)[:MAX_INITIAL_SYNC_ROOMS]:
        try:
            rooms.append(await _room_snapshot(request, requester, room_id, limit))
        except MatrixError:
            continue  # left meanwhile
    return json_response({"end": end, "rooms": rooms, "presence": [], "account_data": []})


async def timestamp_to_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    ts = query_param(request, "ts", _timestamp, required=True)
    direction: Any = query_param(request, "dir", _direction, required=True)
    body = await request.config_dict[ROOM_READER].timestamp_to_event(
        room_id, requester.user_id, ts, direction
    )
    return json_response(body)


def setup_routes(app: web.Application) -> None:
    add_routes(app, "PUT", "/rooms/{room_id}/send/{event_type}/{txn_id}", send_event)
    add_routes(app, "PUT", "/rooms/{room_id}/redact/{event_id}/{txn_id}", redact_event)
    add_routes(app, "POST", "/rooms/{room_id}/send/{event_type}", send_event)
    add_routes(app, "POST", "/rooms/{room_id}/redact/{event_id}", redact_event)
    add_routes(app, "GET", "/rooms/{room_id}/event/{event_id}", get_event)
    add_routes(app, "GET", "/events/{event_id}", get_event_by_id)
    add_routes(app, "GET", "/events", peek_events)
    add_routes(app, "GET", "/initialSync", initial_sync)
    add_routes(app, "GET", "/rooms/{room_id}/initialSync", room_initial_sync)
    add_routes(app, "GET", "/rooms/{room_id}/context/{event_id}", get_context)
    add_routes(app, "GET", "/rooms/{room_id}/messages", get_messages)
    add_routes(
        app,
        "GET",
        "/rooms/{room_id}/timestamp_to_event",
        timestamp_to_event,
        versions=("v1", "unstable/org.matrix.msc3030"),
    )
