"""History visibility: which events of a room a user may read (spec 'History visibility').

For each event we look at the state after it (its state group): the room's
`m.room.history_visibility` and the reader's membership. An event is visible when

- the visibility was `world_readable`; or
- the reader's membership at the event was `join`; or
- the visibility was `invited` and the reader was invited at the event; or
- the visibility was `shared` (also the default) and the reader is not merely peeking,
  i.e. they joined the room at some point (callers cap reads at a departed user's
  leave, so a leaver keeps what they could see while they were in the room).

Messages older than their room's retention policy allows (MSC1763, when the server
enables retention) are never visible, as in Synapse.

Events of a local user who asked for erasure are returned redacted to a reader who
was not joined when they were sent.

Using the state after the event means a user's own membership event counts with its
new membership (they see their join and their leave), and for an event that changes
the history visibility we take the more permissive of the old and new setting, as
Synapse does. Every lookup is batched per distinct state group (groups are cached).
"""

from __future__ import annotations

from collections.abc import Sequence

from homeserver.events import Event
from homeserver.events.redaction import redact
from homeserver.storage import Stores

HV_KEY = ("m.room.history_visibility", "")
# Most permissive first.
LEVELS = ("world_readable", "shared", "invited", "joined")
DEFAULT = "shared"


def _hv_of(event: Event | None) -> str:
    if event is None:
        return DEFAULT
    value = event.content.get("history_visibility")
    return value if value in LEVELS else DEFAULT


def _more_permissive(a: str, b: str) -> str:
    return a if LEVELS.index(a) <= LEVELS.index(b) else b


async def current_history_visibility(stores: Stores, room_id: str) -> str:
    event_id = await stores.current_state.get_current_state_event_id(room_id, *HV_KEY)
    if event_id is None:
        return DEFAULT
    return _hv_of(await stores.events.get_event(event_id))


async def is_world_readable(stores: Stores, room_id: str) -> bool:
    return await current_history_visibility(stores, room_id) == "world_readable"


async def filter_events_for_user(
    stores: Stores,
    user_id: str,
    events: Sequence[Event],
    *,
    is_peeking: bool = False,
) -> list[Event]:
    """The events of `events` the user may see, in the same order.

    `is_peeking`: the user never joined the room (only world-readable events are then
    visible besides those where they were a member at the time).
    """
    events = await stores.retention.drop_expired(events)  # the rooms' retention policies
    if not events:
        return []
    groups = await stores.state.get_state_groups_for_events([e.event_id for e in events])
    # group -> (history visibility, user's membership) after the events with that group
    per_group: dict[int, tuple[str, str | None]] = {}
    wanted: dict[int, tuple[str | None, str | None]] = {}
    for group in set(groups.values()):
        state = await stores.state.read_state_ids(group)
        wanted[group] = (state.get(HV_KEY), state.get(("m.room.member", user_id)))
    fetch = {eid for pair in wanted.values() for eid in pair if eid is not None}
    loaded = await stores.events.get_events(fetch) if fetch else {}
    for group, (hv_id, member_id) in wanted.items():
        member = loaded.get(member_id) if member_id else None
        per_group[group] = (
            _hv_of(loaded.get(hv_id) if hv_id else None),
            member.membership if member is not None else None,
        )
    # Events that changed the visibility: the old setting counts too.
    changes = [e for e in events if e.type == HV_KEY[0] and e.state_key == ""]
    before: dict[str, str] = {}
    for ev in changes:
        before[ev.event_id] = await _visibility_before(stores, ev)

    erased = await stores.accounts.erased_among({e.sender for e in events})
    out = []
    for ev in events:
        found = groups.get(ev.event_id)
        if found is None:
            continue  # outlier: not part of the timeline
        hv, membership = per_group[found]
        if ev.event_id in before:
            hv = _more_permissive(hv, before[ev.event_id])
        if _allowed(hv, membership, is_peeking):
            # An erased sender's events are shown redacted to whoever was not in the
            # room when they were sent (Synapse's erasure).
            out.append(pruned(ev) if ev.sender in erased and membership != "join" else ev)
    return out


def pruned(event: Event) -> Event:
    """`event` with its content redacted by its room version's rules (same ID)."""
    return Event(redact(event.pdu, event.room_version), event.room_version, event.event_id)


def _allowed(hv: str, membership: str | None, is_peeking: bool) -> bool:
    if hv == "world_readable" or membership == "join":
        return True
    if hv == "invited":
        return membership == "invite"
    if hv == "shared":
        return not is_peeking
    return False


async def _visibility_before(stores: Stores, event: Event) -> str:
    prev = event.prev_event_ids
    if not prev:
        return DEFAULT
    state = await stores.state.read_state_ids_for_event(prev[0])
    if state is None or HV_KEY not in state:
        return DEFAULT
    return _hv_of(await stores.events.get_event(state[HV_KEY]))
