"""push/remote_actions.py: a replaying process waits for other writers' push actions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from homeserver.push import remote_actions
from homeserver.push.remote_actions import RemoteActions


class FakeStore:
    def __init__(self) -> None:
        self.read: list[list[int]] = []
        self.applied: list[Any] = []

    async def counted_actions_at(self, positions: list[int]) -> list[Any]:
        self.read.append(positions)
        return [("row", p) for p in positions]

    def apply_recorded_actions(self, actions: list[Any]) -> None:
        self.applied.extend(actions)


async def test_a_sync_waits_for_the_actions_of_replayed_events_and_folds_them_in() -> None:
    store = FakeStore()
    remote = RemoteActions(store)  # type: ignore[arg-type]
    remote.on_new_event(None, 5)  # type: ignore[arg-type]
    remote.on_new_event(None, 0)  # history: nothing to wait for
    await asyncio.wait_for(remote.wait_until(4), 0.1)  # earlier positions: no wait
    waiter = asyncio.create_task(remote.wait_until(5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await remote.recorded({"k": "acts", "ps": [5], "n": 0})  # nothing notifies: no read
    await asyncio.wait_for(waiter, 0.5)
    assert store.read == []
    remote.on_new_event(None, 6)  # type: ignore[arg-type]
    await remote.recorded({"k": "acts", "ps": [6], "n": 2})
    assert store.read == [[6]] and store.applied == [("row", 6)]


async def test_recorded_before_replayed_and_bad_messages() -> None:
    store = FakeStore()
    remote = RemoteActions(store)  # type: ignore[arg-type]
    remote.local_recorded([7])  # the main's own generator was faster than its replay
    remote.on_new_event(None, 7)  # type: ignore[arg-type]
    await asyncio.wait_for(remote.wait_until(7), 0.1)
    for bad in ({"ps": "x"}, {"ps": list(range(remote_actions.MAX_POSITIONS + 1))}):
        await remote.recorded(bad)
    await remote.recorded({"ps": [True, "8", 9], "n": 1})
    assert store.read == [[9]]


async def test_a_lost_message_costs_one_bounded_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_actions, "WAIT_S", 0.2)
    remote = RemoteActions(FakeStore())  # type: ignore[arg-type]
    remote.on_new_event(None, 3)  # type: ignore[arg-type]
    started = time.monotonic()
    await remote.wait_until(3)
    assert 0.15 < time.monotonic() - started < 1.0
    started = time.monotonic()
    await remote.wait_until(3)  # given up on: no second wait
    assert time.monotonic() - started < 0.05
    remote.on_new_event(None, 4)  # type: ignore[arg-type]
    await remote.forget()  # a resync
    await asyncio.wait_for(remote.wait_until(4), 0.05)


async def test_late_actions_make_the_cached_counts_they_change_be_recounted() -> None:
    """A writer's retry or catch-up records actions older than later events' (push/
    actions.py): folding them would skip them (the cache's `seen_upto` is past them),
    so the counts of each (user, room) they touch are dropped, to be read again."""
    from homeserver.storage.push import PushAction

    def action(user: str, room: str, position: int) -> PushAction:
        return PushAction(user, f"$e{position}", room, position, "main", [], True, False, 0)

    class Store(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.recount: list[tuple[str, str]] = []

        async def counted_actions_at(self, positions: list[int]) -> list[Any]:
            rows = [action("@bob:hs", "!a:hs", p) for p in positions]
            return [*rows, action("@carol:hs", "!a:hs", positions[0])]

        def read_marker_moved(self, user_id: str, room_id: str) -> None:
            self.recount.append((user_id, room_id))

    store = Store()
    remote = RemoteActions(store)  # type: ignore[arg-type]
    await remote.recorded({"k": "acts", "ps": [8], "n": 2})
    assert store.recount == []  # in order: folded, as before
    await remote.recorded({"k": "acts", "ps": [3, 4], "n": 3, "late": 1})
    assert sorted(store.recount) == [("@bob:hs", "!a:hs"), ("@carol:hs", "!a:hs")]
    assert len(store.applied) == 2 + 3
