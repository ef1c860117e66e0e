"""Recent room activity in memory, so an incremental /sync need not ask the database
what changed since its token.

Fed by the persister (every event announced to clients, in stream order) and bounded:
it remembers the last `window` events. A token older than that, or from before this
process started, gets `None` and the caller falls back to the database.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

from homeserver.events import Event
from homeserver.storage import TimelineEvent

# Per room, the newest events kept for incremental syncs (a sync's default timeline is
# 10 events, and one more tells it whether the timeline is limited).
ROOM_TAIL = 12
MAX_ROOM_TAILS = 2_000


class RoomActivity:
    """Answers "which rooms changed" and "a room's newest events" from memory.

    Events arrive in stream order (the persister announces in commit order), which the
    reverse scans below rely on. Every answer is either exact or `None` ("ask the
    database"); tests/unit/test_sync_activity.py checks that against a reference.
    """

    def __init__(
        self,
        start_position: int,
        window: int = 20_000,
        *,
        room_tail: int = ROOM_TAIL,
        max_room_tails: int = MAX_ROOM_TAILS,
    ) -> None:
        # Everything after `_floor` (exclusive) is in `_recent`.
        self._floor = start_position
        self._recent: deque[tuple[int, str]] = deque()
        self._window = window
        self._room_tail = room_tail
        self._max_room_tails = max_room_tails
        self._member_change: dict[str, int] = {}  # room -> last member event
        self._own_member_change: dict[str, int] = {}  # user -> last member event about them
        # room -> its newest events; and per room the newest stream ordering NOT kept
        # (evicted from the tail), below which the tail cannot answer.
        self._tails: OrderedDict[str, deque[TimelineEvent]] = OrderedDict()
        self._tail_floor: dict[str, int] = {}
        # A room without a tail may have had one evicted: its events up to the newest
        # event of any evicted tail are unknown here.
        self._evicted_floor = start_position

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if stream_ordering <= self._floor:
            return  # backfilled history: not news
        self._recent.append((stream_ordering, event.room_id))
        if len(self._recent) > self._window:
            self._floor = self._recent.popleft()[0]
        self._remember(event, stream_ordering)
        if event.type == "m.room.member":
            self._member_change[event.room_id] = stream_ordering
            if event.state_key:
                self._own_member_change[event.state_key] = stream_ordering

    def _remember(self, event: Event, stream_ordering: int) -> None:
        room_id = event.room_id
        tail = self._tails.get(room_id)
        if tail is None:
            tail = self._tails[room_id] = deque()
            self._tail_floor[room_id] = self._no_tail_floor()
            if len(self._tails) > self._max_room_tails:
                gone, gone_tail = self._tails.popitem(last=False)
                self._tail_floor.pop(gone, None)
                if gone_tail:
                    newest = gone_tail[-1].stream_ordering
                    self._evicted_floor = max(self._evicted_floor, newest)
        else:
            self._tails.move_to_end(room_id)
        tail.append(TimelineEvent(stream_ordering, event))
        if len(tail) > self._room_tail:
            self._tail_floor[room_id] = tail.popleft().stream_ordering

    def _no_tail_floor(self) -> int:
        """Below this, a room with no tail may have events we no longer hold."""
        return max(self._floor, self._evicted_floor)

    def room_events_between(
        self, room_id: str, upper: int, lower: int, limit: int
    ) -> list[TimelineEvent] | None:
        """Events of a room in (lower, upper], newest first, at most `limit`, like
        EventStore.get_room_events_between(..., "b"); None when the tail can't say."""
        floor = self._tail_floor.get(room_id)
        if floor is None:
            floor = self._no_tail_floor()
        if lower < floor:
            return None
        tail = self._tails.get(room_id, ())
        out: list[TimelineEvent] = []
        for item in reversed(tail):
            if item.stream_ordering <= lower:
                break
            if item.stream_ordering <= upper:
                out.append(item)
                if len(out) >= limit:
                    break
        return out

    def covers(self, since: int) -> bool:
        return since >= self._floor

    def rooms_changed_between(self, since: int, upto: int) -> dict[str, int] | None:
        """room_id -> highest stream ordering in (since, upto], or None if unknown."""
        if not self.covers(since):
            return None
        changed: dict[str, int] = {}
        for stream, room_id in reversed(self._recent):
            if stream <= since:
                break
            if stream <= upto and stream > changed.get(room_id, 0):
                changed[room_id] = stream
        return changed

    def membership_changed_since(
        self, since: int, rooms: Iterable[str], user_id: str
    ) -> bool | None:
        """Whether any of `rooms` had a member event, or `user_id`'s membership changed
        anywhere, after `since`; None if the window does not reach back that far."""
        if not self.covers(since):
            return None
        if self._own_member_change.get(user_id, 0) > since:
            return True
        return any(self._member_change.get(r, 0) > since for r in rooms)
