"""State resolution: the one entry point, dispatching on the room version's algorithm.

Pure: events come in through `fetch_events` (IDs that cannot be found are left out of
its answer), and optionally auth chains through `fetch_auth_chain` (the union of the
auth chains of the given events, e.g. from a storage index; without it they are walked
with `compute_auth_chain`). See state_res_v1 and state_res_v2 for the algorithms.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..events.event import StateKey
from ..events.room_versions import RoomVersion, StateResAlgorithm
from .auth_chain import FetchEvents
from .state_res_v1 import resolve_v1
from .state_res_v2 import FetchAuthChain, StateMap, resolve_v2


async def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    fetch_events: FetchEvents,
    fetch_auth_chain: FetchAuthChain | None = None,
) -> dict[StateKey, str]:
    """Resolve the room states `state_sets` ((type, state_key) -> event_id) into one.

    One state set (or several identical ones) comes back unchanged without any I/O.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    if room_version.state_res == StateResAlgorithm.V1:
        return await resolve_v1(room_version, state_sets, fetch_events)
    return await resolve_v2(room_version, state_sets, fetch_events, fetch_auth_chain)


__all__ = ["FetchAuthChain", "FetchEvents", "StateMap", "resolve_state"]
