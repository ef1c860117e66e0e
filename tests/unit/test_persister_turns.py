"""Announcement turns when persists are grouped (rooms/persister.py): a request retried
alone after its group failed, or whose caller was cancelled while its group committed,
takes its turn at commit and must let it go, or every later announcement would wait
forever (the notifier and /sync would stop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from homeserver.rooms.persister import Persister


class GroupedEvents:
    """persist_events whose hook another task (the group's committer) calls later."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []
        self.released = asyncio.Event()

    async def persist_events(
        self, room_id: str, items: list[Any], *, in_commit_order: Callable[[], None], **_: Any
    ) -> list[int]:
        self.hooks.append(in_commit_order)
        await self.released.wait()
        return [len(self.hooks)]


def persister(events: GroupedEvents) -> Persister:
    return Persister(SimpleNamespace(events=events), None, "example.org")  # type: ignore[arg-type]


async def test_a_caller_cancelled_while_its_group_commits_does_not_block_later_turns() -> None:
    events = GroupedEvents()
    p = persister(events)
    gone = asyncio.ensure_future(p._persist_in_order("!a:x", []))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert gone.cancelled()
    events.hooks[0]()  # the committer reaches the cancelled caller's request at commit
    later = asyncio.ensure_future(p._persist_in_order("!b:x", []))
    await asyncio.sleep(0)
    events.hooks[1]()
    events.released.set()
    _, turn = await asyncio.wait_for(later, 1)
    await asyncio.wait_for(turn.ready(), 1)  # not held up by the abandoned turn
    turn.finish()


async def test_a_request_retried_alone_lets_its_first_turn_go() -> None:
    events = GroupedEvents()
    p = persister(events)
    retried = asyncio.ensure_future(p._persist_in_order("!a:x", []))
    await asyncio.sleep(0)
    events.hooks[0]()  # the group's commit failed after its hooks ran...
    events.hooks[0]()  # ...and the request alone commits: a second turn
    events.released.set()
    _, turn = await asyncio.wait_for(retried, 1)
    await asyncio.wait_for(turn.ready(), 1)
    turn.finish()
    events.released = asyncio.Event()
    after = asyncio.ensure_future(p._persist_in_order("!b:x", []))
    await asyncio.sleep(0)
    events.hooks[1]()
    events.released.set()
    _, next_turn = await asyncio.wait_for(after, 1)
    await asyncio.wait_for(next_turn.ready(), 1)
    next_turn.finish()
