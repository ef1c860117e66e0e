"""Build, authorise and persist events that our own users send.

Every local event goes through `LocalEvents.send`: it takes the room's lock, builds the
event on top of the current forward extremities, checks the auth rules against the
state before it, persists, and only then returns, so a 200 to the client means durable.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import Event, RoomVersion, get_room_version
from homeserver.events.builder import build_event
from homeserver.events.hashing import compute_reference_hash, unpadded_b64
from homeserver.events.validation import EventFormatError, validate_pdu_format
from homeserver.graph.auth_rules import AuthError, auth_types_for_event, check_auth_rules
from homeserver.storage import Stores

from .keyed_lock import KeyedLock
from .persister import Persister
from .room_state import RoomState

MAX_PREV_EVENTS = 10
MAX_DEPTH = 2**63 - 1
CREATE_KEY = ("m.room.create", "")


class LocalEvents:
    def __init__(
        self,
        stores: Stores,
        room_state: RoomState,
        persister: Persister,
        locks: KeyedLock,
        server_name: str,
        signing_key: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stores = stores
        self._room_state = room_state
        self._persister = persister
        self.locks = locks
        self._server_name = server_name
        self._signing_key = signing_key
        self._clock = clock

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def new_room_id(self) -> str:
        """A fresh `!opaque:server` room ID for room versions 1–11."""
        return f"!{secrets.token_urlsafe(18)}:{self._server_name}"

    async def room_version(self, room_id: str) -> RoomVersion:
        version = await self._stores.rooms.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        return get_room_version(version)

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        redacts: str | None = None,
        txn: tuple[str, str | None, str] | None = None,
    ) -> Event:
        """Send an event as `sender`; with `txn` (user, device, txn_id) it is idempotent."""
        version = await self.room_version(room_id)
        async with self.locks.hold(room_id):
            if txn is not None:
                existing = await self._stores.transactions.get_client_txn(*txn)
                if existing is not None:
                    event = await self._stores.events.get_event(existing)
                    if event is not None:
                        return event
            event, state_before, group = await self._build_checked(
                version, room_id, sender, event_type, content, state_key, redacts
            )
            await self._persister.persist(
                event, state_before=state_before, state_before_group=group, announce_to_peers=True
            )
            if txn is not None:
                await self._stores.transactions.set_client_txn(*txn, event.event_id)
        return event

    async def build_only(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
    ) -> Event:
        """Build and authorise an event without persisting it (e.g. a remote invite,
        which the invitee's server must counter-sign first)."""
        version = await self.room_version(room_id)
        async with self.locks.hold(room_id):
            event, _, _ = await self._build_checked(
                version, room_id, sender, event_type, content, state_key, None
            )
        return event

    async def build_template(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
    ) -> dict[str, Any]:
        """An unsigned event template for a remote user (make_join/leave/knock): built
        on our current extremities and auth-checked against our state (403 if not
        allowed); without hashes and signatures, which the remote server adds."""
        event = await self.build_only(room_id, sender, event_type, content, state_key)
        pdu = {k: v for k, v in event.pdu.items() if k not in ("hashes", "signatures")}
        pdu["origin"] = sender.partition(":")[2]
        return pdu

    async def persist_built(self, event: Event) -> Event:
        """Persist an event from `build_only` (possibly counter-signed since)."""
        async with self.locks.hold(event.room_id):
            state_before, group = await self._room_state.state_after_events(
                event.room_version, event.prev_event_ids
            )
            await self._persister.persist(
                event, state_before=state_before, state_before_group=group, announce_to_peers=True
            )
        return event

    async def _build_checked(
        self,
        version: RoomVersion,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
    ) -> tuple[Event, dict, int | None]:
        prev_ids = (await self._stores.events.get_forward_extremities(room_id))[-MAX_PREV_EVENTS:]
        if not prev_ids:
            raise not_found("Room has no events we can build on")
        state_before, group = await self._room_state.state_after_events(version, prev_ids)
        auth_keys = auth_types_for_event(version, event_type, sender, state_key, content)
        auth_ids = [state_before[k] for k in sorted(auth_keys) if k in state_before]
        prev_events = await self._stores.events.get_events(prev_ids)
        depth = min(max((e.depth for e in prev_events.values()), default=0) + 1, MAX_DEPTH)
        edge_hashes = None
        if version.event_id_in_event:
            related = await self._stores.events.get_events([*prev_ids, *auth_ids])
            edge_hashes = {
                eid: unpadded_b64(compute_reference_hash(ev.pdu, version))
                for eid, ev in related.items()
            }
        event = build_event(
            version,
            room_id=room_id,
            sender=sender,
            type=event_type,
            content=content,
            state_key=state_key,
            prev_event_ids=prev_ids,
            auth_event_ids=auth_ids,
            depth=depth,
            origin_server_ts=self.now_ms(),
            redacts=redacts,
            server_name=self._server_name,
            signing_key=self._signing_key,
            edge_hashes=edge_hashes,
        )
        _check_format(event, version)
        auth_state = await self._room_state.auth_state_for(state_before, auth_keys | {CREATE_KEY})
        try:
            check_auth_rules(event, auth_state)
        except AuthError as e:
            raise forbidden(str(e)) from None
        return event, state_before, group

    async def create_room_event(
        self, version: RoomVersion, sender: str, content: dict[str, Any], room_id: str | None
    ) -> Event:
        """Build and persist the m.room.create event that starts a room.

        In v12 `room_id` must be None: the room ID is derived from this event.
        """
        event = build_event(
            version,
            room_id=None if version.room_id_is_create_event_id else room_id,
            sender=sender,
            type="m.room.create",
            content=content,
            state_key="",
            prev_event_ids=[],
            auth_event_ids=[],
            depth=1,
            origin_server_ts=self.now_ms(),
            server_name=self._server_name,
            signing_key=self._signing_key,
        )
        _check_format(event, version)
        try:
            check_auth_rules(event, {})
        except AuthError as e:
            raise forbidden(str(e)) from None
        await self._stores.rooms.store_room(
            event.room_id, version.identifier, sender, created_ts=event.origin_server_ts
        )
        async with self.locks.hold(event.room_id):
            await self._persister.persist(event, state_before={})
        return event


def _check_format(event: Event, version: RoomVersion) -> None:
    try:
        validate_pdu_format(event.pdu, version)
    except EventFormatError as e:
        if "65" in str(e) or "large" in str(e).lower() or "bytes" in str(e):
            raise MatrixError(413, "M_TOO_LARGE", f"Event is too large: {e}") from None
        raise MatrixError(400, "M_BAD_JSON", f"Invalid event: {e}") from None
