"""What an event persister announces of its own writes (replication/writers.py
LocalCommits) when the processes claim positions side by side: the visible position,
never a position of its own that a lower one still being written elsewhere precedes,
and, once that lower one ends, everything it wrote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import homeserver.replication.writers as writers
from homeserver.replication.writers import LocalCommits
from homeserver.storage.errors import DatabaseUnavailableError
from tests.storage.conftest import make_event


def _commits(visible: list[Any]) -> tuple[LocalCommits, list[int], list[int]]:
    commits = LocalCommits()
    published: list[int] = []
    followed: list[int] = []
    commits.publish = lambda message: published.append(message["p"])
    commits.follow = followed.append

    async def read_visible() -> int:
        value = visible.pop(0) if len(visible) > 1 else visible[0]
        if isinstance(value, Exception):
            raise value
        return int(value)

    commits.visible = read_visible
    return commits, published, followed


async def _settle(commits: LocalCommits) -> None:
    async with asyncio.timeout(5):
        while commits._announcing is not None and not commits._announcing.done():
            await asyncio.sleep(0.001)


async def test_own_writes_are_announced_once_the_lower_positions_elsewhere_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writers, "VISIBLE_RETRY_S", 0.001)
    # Positions 1-2 are another process's, still in flight for three reads; the
    # database is away for one, and one fails as nothing should.
    away, broken = DatabaseUnavailableError("away"), RuntimeError("unexpected")
    commits, published, followed = _commits([0, 0, away, 0, broken, 4])
    commits.on_new_event(make_event("$3", room_id="!r:x"), 3)
    commits.on_new_event(make_event("$4", room_id="!r:x"), 4)
    await _settle(commits)
    assert published == followed == [4]
    assert commits.last == 4
    await commits.close()


async def test_without_claims_each_write_is_announced_at_once() -> None:
    commits, published, followed = _commits([0])
    commits.visible = None
    commits.on_new_event(make_event("$1", room_id="!r:x"), 1)
    commits.on_new_event(make_event("$2", room_id="!r:x"), 2)
    assert published == followed == [1, 2]


async def test_writes_made_meanwhile_are_covered_by_a_later_read() -> None:
    commits, published, _ = _commits([5, 6])
    commits.on_new_event(make_event("$5", room_id="!r:x"), 5)
    commits.on_new_event(make_event("$6", room_id="!r:y"), 6)
    await _settle(commits)
    assert published == [5, 6]
    await commits.close()
