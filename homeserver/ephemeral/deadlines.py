"""DeadlineQueue: "which keys are due now?" in O(due · log n), never a scan of all keys.

Presence timers (idle, sync timeout) need per-user deadlines that move often: every
sync end and every action pushes a user's deadline. A heap with lazy deletion keeps at
most one live entry per key; an entry whose deadline no longer matches the key's
scheduled one is stale and skipped when it surfaces.
"""

from __future__ import annotations

import heapq


class DeadlineQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._scheduled)

    def schedule(self, key: str, deadline_ms: int) -> bool:
        """Ask to look at `key` at `deadline_ms` (or earlier if already asked earlier).

        A later deadline than the scheduled one is ignored: when the earlier one fires the
        owner re-evaluates the key and schedules its true next deadline. Returns whether
        this became the key's deadline (so the caller may wake its timer loop).
        """
        current = self._scheduled.get(key)
        if current is not None and current <= deadline_ms:
            return False
        self._scheduled[key] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, key))
        # Stale entries are bounded by live ones: rebuild when they dominate.
        if len(self._heap) > 2 * len(self._scheduled) + 64:
            self._heap = [(d, k) for k, d in self._scheduled.items()]
            heapq.heapify(self._heap)
        return True

    def next_deadline(self) -> int | None:
        """The earliest live deadline, dropping stale heap entries on the way."""
        while self._heap:
            deadline, key = self._heap[0]
            if self._scheduled.get(key) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now_ms: int, limit: int) -> list[str]:
        """Unschedule and return up to `limit` keys whose deadline is <= now_ms."""
        due: list[str] = []
        while len(due) < limit:
            deadline = self.next_deadline()
            if deadline is None or deadline > now_ms:
                break
            _, key = heapq.heappop(self._heap)
            del self._scheduled[key]
            due.append(key)
        return due
