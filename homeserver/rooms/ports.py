"""What the room service needs from the outside, declared as protocols (ports).

Federation implements `RemoteRooms` and `OutboundEvents`; sync implements
`EventListener`. The app factory wires them, so `rooms` never imports either.
"""

from __future__ import annotations

from collections.abc import Iterable
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
