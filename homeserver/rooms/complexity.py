"""Room complexity (Synapse's "v1": state events / 500) and the `limit_remote_rooms`
guard on local users' joins of remote rooms.

Joining a remote room makes us fetch, check, store and resolve its whole state: a cost
set by whoever made the room big. With the limit on (homeserver/config/room_complexity.py
says what an operator sets), `MembershipService.join` asks `before_remote_join` first:
the room's servers are asked for the complexity and a room above the limit is refused
(400 M_RESOURCE_LIMIT_EXCEEDED with the operator's message, as Synapse). When no server
answers (the endpoint is unstable and Synapse answers only for public or
world-readable rooms), the join goes ahead as in Synapse and `too_complex_here`
measures the state we then hold: the user leaves again if it is too big.

The measure is a bounded count of the current-state rows (`MAX_COUNTED_STATE`), never
a read of the state itself, so answering other servers costs one index range scan.
"""

from __future__ import annotations

import logging
from typing import Protocol

from homeserver.errors import MatrixError
from homeserver.storage import Stores

log = logging.getLogger(__name__)

# Synapse's divisor: a complexity of 1.0 is a room of 500 state events.
STATE_EVENTS_PER_UNIT = 500
# The most current-state rows counted for one answer (a complexity of 1,000): far above
# any threshold an operator sets, while a room of millions of state events still costs
# one bounded index scan to measure.
MAX_COUNTED_STATE = 500_000

RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"


class RoomComplexityLookup(Protocol):
    """Asking other servers how complex a room is (federation implements it)."""

    async def get_room_complexity(self, servers: list[str], room_id: str) -> float | None:
        """The first valid "v1" any of `servers` gives, None when none does (each
        request bounded in time and size by the adapter)."""
        ...


async def room_complexity(stores: Stores, room_id: str) -> float:
    """The complexity of a room as we hold it: its current state events / 500, rounded
    to two places (Synapse's v1), counted up to MAX_COUNTED_STATE rows."""
    count = await stores.current_state.count_current_state(room_id, MAX_COUNTED_STATE)
    return round(count / STATE_EVENTS_PER_UNIT, 2)


class RemoteRoomLimit:
    """Refuses local users' joins of remote rooms above `threshold` (Synapse's
    limit_remote_rooms, which is built only when the operator turns it on)."""

    def __init__(
        self,
        stores: Stores,
        lookup: RoomComplexityLookup | None,
        *,
        threshold: float,
        message: str,
        admins_can_join: bool,
    ) -> None:
        self._stores = stores
        self._lookup = lookup
        self._threshold = threshold
        self._message = message
        self._admins_can_join = admins_can_join

    def refusal(self) -> MatrixError:
        """Synapse's answer to a join of a room too complex: 400, with the operator's
        complexity_error as the message."""
        return MatrixError(400, RESOURCE_LIMIT_EXCEEDED, self._message)

    async def _applies_to(self, user_id: str) -> bool:
        """Everyone is limited, but server admins when admins_can_join is set."""
        if not self._admins_can_join:
            return True
        user = await self._stores.accounts.get_user(user_id)
        return user is None or not user.is_admin

    async def before_remote_join(self, room_id: str, user_id: str, servers: list[str]) -> bool:
        """Raise the refusal when a server says the room is too complex; return whether
        the state must be measured after the join (no server answered)."""
        if not await self._applies_to(user_id):
            return False
        remote = None
        if self._lookup is not None:
            remote = await self._lookup.get_room_complexity(servers, room_id)
        if remote is None:
            log.info("no complexity for %s from %s: measuring after the join", room_id, servers)
            return True
        if remote > self._threshold:
            log.info(
                "refusing %s's join of %s: complexity %s above %s",
                user_id,
                room_id,
                remote,
                self._threshold,
            )
            raise self.refusal()
        return False

    async def too_complex_here(self, room_id: str) -> bool:
        """Whether the room's state as we now hold it is above the limit."""
        return await room_complexity(self._stores, room_id) > self._threshold
