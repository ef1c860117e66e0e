"""Fetching events from other servers: homeserver.rooms.ports.RemoteEvents.

The room service asks for events it lacks (a PDU's missing prev or auth events, the
state at an event). Every PDU a peer returns goes through the receiving checks 1-3
(`federation.inbound.InboundChecks.check_pdu`: format, signatures, content hash) before
the room service sees it; PDUs that fail are dropped, PDUs whose hash does not match
come back redacted. A PDU from another room, or with another ID than the one asked
for, is dropped too: a peer must not slip unrelated events in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from federation.client import FederationError, fed_path
from federation.inbound import PduRejected
from federation.keyring import KeyFetchHttp
from homeserver.events import Event, RoomVersion, get_room_version

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 30.0


# The part of federation.client.FederationClient used here: the same signed-JSON GET and
# POST the keyring needs, so the one Protocol serves both.
JsonClient = KeyFetchHttp


class PduChecker(Protocol):
    async def check_pdu(self, pdu: Any, room_version: RoomVersion) -> Event: ...


RoomVersionLookup = Callable[[str], Awaitable[str | None]]


class FederationRemoteEvents:
    """RemoteEvents over signed federation requests, with every PDU checked."""

    def __init__(
        self, client: JsonClient, checks: PduChecker, room_version_of: RoomVersionLookup
    ) -> None:
        self._client = client
        self._checks = checks
        self._room_version_of = room_version_of

    async def _version(self, room_id: str) -> RoomVersion:
        identifier = await self._room_version_of(room_id)
        if identifier is None:
            raise LookupError(f"unknown room {room_id}")
        return get_room_version(identifier)

    async def checked_pdus(
        self, pdus: Any, room_id: str, version: RoomVersion, *, source: str
    ) -> list[Event]:
        """Run checks 1-3 on each PDU of a peer's answer; keep those that pass."""
        if not isinstance(pdus, list):
            return []
        out: list[Event] = []
        seen: set[str] = set()
        for pdu in pdus:
            try:
                event = await self._checks.check_pdu(pdu, version)
            except PduRejected as e:
                log.info("dropping a PDU from %s (%s): %s", source, room_id, e)
                continue
            if event.room_id != room_id:
                log.info("dropping %s from %s: it is in another room", event.event_id, source)
                continue
            if event.event_id not in seen:
                seen.add(event.event_id)
                out.append(event)
        return out

    async def get_event(self, destination: str, room_id: str, event_id: str) -> Event | None:
        version = await self._version(room_id)
        try:
            body = await self._client.get_json(
                destination,
                fed_path("/_matrix/federation/v1/event/{}", event_id),
                timeout=FETCH_TIMEOUT_S,
            )
        except FederationError as e:
            log.info("event %s from %s: %s", event_id, destination, e)
            return None
        pdus = body.get("pdus") if isinstance(body, dict) else None
        events = await self.checked_pdus(pdus, room_id, version, source=destination)
        return next((e for e in events if e.event_id == event_id), None)

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest: list[str],
        latest: list[str],
        limit: int,
        min_depth: int,
    ) -> list[Event]:
        version = await self._version(room_id)
        body = await self._client.post_json(
            destination,
            fed_path("/_matrix/federation/v1/get_missing_events/{}", room_id),
            {
                "earliest_events": list(earliest),
                "latest_events": list(latest),
                "limit": limit,
                "min_depth": min_depth,
            },
            timeout=FETCH_TIMEOUT_S,
        )
        events = body.get("events") if isinstance(body, dict) else None
        return (await self.checked_pdus(events, room_id, version, source=destination))[:limit]

    async def get_state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        body = await self._client.get_json(
            destination,
            fed_path("/_matrix/federation/v1/state_ids/{}", room_id),
            query={"event_id": event_id},
            timeout=FETCH_TIMEOUT_S,
        )
        if not isinstance(body, dict):
            raise ValueError("state_ids answer is not an object")
        return _str_list(body.get("pdu_ids")), _str_list(body.get("auth_chain_ids"))

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> list[Event]:
        version = await self._version(room_id)
        body = await self._client.get_json(
            destination,
            fed_path("/_matrix/federation/v1/event_auth/{}/{}", room_id, event_id),
            timeout=FETCH_TIMEOUT_S,
        )
        chain = body.get("auth_chain") if isinstance(body, dict) else None
        return await self.checked_pdus(chain, room_id, version, source=destination)

    async def get_state(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[Event], list[Event]]:
        """(state before `event_id`, its auth chain) as full, checked events."""
        version = await self._version(room_id)
        body = await self._client.get_json(
            destination,
            fed_path("/_matrix/federation/v1/state/{}", room_id),
            query={"event_id": event_id},
            timeout=FETCH_TIMEOUT_S,
        )
        if not isinstance(body, dict):
            raise ValueError("state answer is not an object")
        state = await self.checked_pdus(body.get("pdus"), room_id, version, source=destination)
        auth = await self.checked_pdus(body.get("auth_chain"), room_id, version, source=destination)
        return state, auth

    async def backfill(
        self, destination: str, room_id: str, from_event_ids: Iterable[str], limit: int
    ) -> list[Event]:
        """Up to `limit` events preceding `from_event_ids`, checked (newest first is not
        guaranteed: callers order by depth)."""
        version = await self._version(room_id)
        body = await self._client.get_json(
            destination,
            fed_path("/_matrix/federation/v1/backfill/{}", room_id),
            query={"v": list(from_event_ids), "limit": limit},
            timeout=FETCH_TIMEOUT_S,
        )
        pdus = body.get("pdus") if isinstance(body, dict) else None
        return (await self.checked_pdus(pdus, room_id, version, source=destination))[:limit]


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("expected a list of event IDs")
    return [v for v in value if isinstance(v, str)]
