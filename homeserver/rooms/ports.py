"""What the room service needs from the outside, declared as protocols (ports).

Federation implements `RemoteRooms` and `OutboundEvents`; sync implements
`EventListener`. The app factory wires them, so `rooms` never imports either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from homeserver.events import Event


class EventListener(Protocol):
    """Told about every event once it is durable (persist first, then notify)."""

    def on_new_event(self, event: Event, stream_ordering: int) -> None: ...


class OutboundEvents(Protocol):
    """Queues a persisted local event for delivery to other servers in the room."""

    async def send_event(self, event: Event, destinations: Iterable[str]) -> None: ...


class RemoteRooms(Protocol):
    """Membership handshakes for rooms that another server must vouch for.

    Each call runs the whole exchange (make_* / send_*, verification, persistence
    through the room service) and returns the persisted membership event.
    """

    async def join(
        self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]
    ) -> Event: ...

    async def leave(self, room_id: str, user_id: str, servers: list[str]) -> Event: ...

    async def knock(
        self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]
    ) -> Event: ...

    async def invite(self, event: Event, invite_room_state: list[dict[str, Any]]) -> Event: ...


class RemoteProfileLookup(Protocol):
    """A remote user's profile (for the invitee's name in an invite we send)."""

    async def query_profile(
        self, user_id: str, field: str | None = None
    ) -> dict[str, Any] | None: ...


class RemoteEvents(Protocol):
    """Fetching events a remote server has and we lack. Every event returned has
    passed the receiving checks (format, signatures, content hash; a redacted copy on a
    hash mismatch) - `rooms` trusts them for those and runs the auth checks itself."""

    async def get_event(self, destination: str, room_id: str, event_id: str) -> Event | None: ...

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest: list[str],
        latest: list[str],
        limit: int,
        min_depth: int,
    ) -> list[Event]: ...

    async def get_state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        """(state event IDs before `event_id`, auth chain IDs of that state)."""
        ...

    async def get_event_auth(
        self, destination: str, room_id: str, event_id: str
    ) -> list[Event]: ...


class Backfill(Protocol):
    """Fetches older history of a room from other servers when a local user paginates
    past the oldest event we have; returns how many events it added."""

    async def backfill(self, room_id: str, limit: int) -> int: ...


class Aggregations(Protocol):
    """Bundles child-event aggregations (threads, edits, references) for events a
    client reads: event ID -> the `unsigned["m.relations"]` object (events without
    any aggregation are absent). One batched call per response."""

    async def __call__(
        self, events: Sequence[Event], user_id: str
    ) -> dict[str, dict[str, Any]]: ...
