"""What the room service needs from the outside, declared as protocols (ports).

Federation implements `RemoteRooms`, `RemoteEvents` and `OutboundEvents`; sync
implements `EventListener`. The composition module passes them to the constructors, so
`rooms` never imports either. Adapters fetch and check; only the room service writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.events import Event


class EventListener(Protocol):
    """Told about every event once it is durable (persist first, then notify)."""

    def on_new_event(self, event: Event, stream_ordering: int) -> None: ...


class OutboundEvents(Protocol):
    """Queues persisted local events for delivery to other servers in the room."""

    async def send_events(self, events: Sequence[Event], destinations: Iterable[str]) -> None:
        """Events of one room (one, or a chain of messages), in order, in one write."""
        ...


@dataclass(frozen=True)
class JoinAnswer:
    """What a resident server answered to our send_join, after checks 1-3."""

    event: Event  # our join (counter-signed by the authorising server for restricted joins)
    state: list[Event]  # the room's state before our join
    auth_chain: list[Event]


class RefusedAnswer(Exception):
    """The room service will not persist a peer's answer (e.g. our join is not allowed
    by the state it returned): the handshake tries the next server."""


# Checks and persists one join answer (the room service's half of the handshake).
AcceptJoin = Callable[[JoinAnswer], Awaitable[None]]


class RemoteRooms(Protocol):
    """Membership handshakes for rooms that another server must vouch for.

    The adapter runs the exchange with each candidate server in turn (make_* / send_*,
    checks 1-3 of what comes back) and persists nothing: the room service does, through
    `accept` for joins and with the returned event for the others.
    """

    async def join(
        self,
        room_id: str,
        user_id: str,
        servers: list[str],
        content: dict[str, Any],
        accept: AcceptJoin,
    ) -> Event: ...

    async def leave(self, room_id: str, user_id: str, servers: list[str]) -> Event:
        """Our leave (rejecting an invite), accepted by one of `servers`."""
        ...

    async def knock(
        self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]
    ) -> Event:
        """Our knock, accepted by one of `servers`; `unsigned.knock_room_state` holds
        the stripped state the server sent back."""
        ...

    async def invite(self, event: Event, invite_room_state: list[dict[str, Any]]) -> Event:
        """The invite counter-signed by the invitee's server."""
        ...


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

    async def backfill(
        self, destination: str, room_id: str, from_event_ids: Iterable[str], limit: int
    ) -> list[Event]:
        """Up to `limit` events preceding `from_event_ids` (in no particular order)."""
        ...


class Backfill(Protocol):
    """Fetches older history of a room from other servers when a local user paginates
    past the oldest event we have; returns how many events it added."""

    async def backfill(self, room_id: str, limit: int) -> int: ...


class Aggregations(Protocol):
    """Bundles child-event aggregations (threads, edits, references) for events a
    client reads: event ID -> the `unsigned["m.relations"]` object (events without
    any aggregation are absent). One batched call per response."""

    async def __call__(
        self, events: Sequence[Event], user_id: str, *, cap: int | None = None
    ) -> dict[str, dict[str, Any]]: ...
