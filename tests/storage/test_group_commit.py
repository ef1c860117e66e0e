"""Grouped persists (storage/group_commit.py), on both backends: requests of other rooms
that arrive while a transaction runs share the next one, each stays whole, their
commit-order hooks run in stream order, and a request that fails fails alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from homeserver.storage import PersistItem, StorageError, Stores

from .conftest import make_event, member

ROOMS = [f"!g{i}:example.org" for i in range(8)]


def count_transactions(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    opened = [0]
    original = stores.db.transaction

    @contextlib.asynccontextmanager
    async def counted(**options: Any) -> AsyncIterator[Any]:
        opened[0] += 1
        async with original(**options) as conn:
            yield conn

    monkeypatch.setattr(stores.db, "transaction", counted)
    return opened


def chain(room_id: str, n: int) -> list[PersistItem]:
    tag = room_id[1:4]
    return [
        PersistItem(
            make_event(
                f"${tag}{i}",
                room_id=room_id,
                prev=[f"${tag}{i - 1}"] if i else [],
                depth=i + 1,
                content={"body": f"{tag} {i}"},
            )
        )
        for i in range(n)
    ]


async def test_concurrent_rooms_share_one_transaction_in_stream_order(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    for room_id in ROOMS:
        await stores.rooms.store_room(room_id, "10", "@alice:example.org")
    opened = count_transactions(stores, monkeypatch)
    hooked: list[str] = []

    async def persist(room_id: str) -> list[int]:
        items = chain(room_id, 3)
        return await stores.events.persist_events(
            room_id,
            items,
            new_extremities=[items[-1].event.event_id],
            client_txns=[("@alice:example.org", "DEV", f"t-{room_id}", items[0].event.event_id)],
            in_commit_order=lambda: hooked.append(room_id),
            grouped=True,
        )

    results = await asyncio.gather(*(persist(r) for r in ROOMS))
    assert opened[0] == 1  # all eight arrived before the first commit: one transaction
    everything = sorted(so for orderings in results for so in orderings)
    assert everything == list(range(1, 3 * len(ROOMS) + 1))
    for orderings in results:
        assert orderings == list(range(orderings[0], orderings[0] + 3))  # a room's in order
    by_position = sorted(ROOMS, key=lambda r: results[ROOMS.index(r)][0])
    assert hooked == by_position  # hooks in commit (stream) order
    for room_id, orderings in zip(ROOMS, results, strict=True):
        tag = room_id[1:4]
        assert await stores.events.get_forward_extremities(room_id) == [f"${tag}2"]
        assert await stores.events.get_stream_ordering(f"${tag}1") == orderings[1]
        txn = await stores.transactions.get_client_txn("@alice:example.org", "DEV", f"t-{room_id}")
        assert txn == f"${tag}0"
    assert await stores.events.get_current_stream_position() == 3 * len(ROOMS)


async def test_a_failing_request_fails_alone(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that breaks its group's transaction (here: an out-of-band membership
    naming no member event of its batch, after every row was inserted) makes the group
    retry one transaction each: the others are written, only it raises, and the stream
    has no hole."""
    good = ROOMS[:3]
    for room_id in good + [ROOMS[3]]:
        await stores.rooms.store_room(room_id, "10", "@alice:example.org")
    opened = count_transactions(stores, monkeypatch)

    async def persist(room_id: str) -> list[int]:
        items = chain(room_id, 2)
        return await stores.events.persist_events(
            room_id, items, new_extremities=[items[-1].event.event_id], grouped=True
        )

    async def broken() -> list[int]:
        invite = member("$bad-invite", "@bob:example.org", "invite", room_id=ROOMS[3])
        return await stores.events.persist_events(
            ROOMS[3],
            [PersistItem(invite, outlier=True)],
            out_of_band_memberships=["$not-in-the-batch"],
            grouped=True,
        )

    outcomes = await asyncio.gather(
        persist(good[0]), broken(), persist(good[1]), persist(good[2]), return_exceptions=True
    )
    assert isinstance(outcomes[1], StorageError)
    written = [o for i, o in enumerate(outcomes) if i != 1]
    assert all(isinstance(o, list) for o in written), outcomes
    assert opened[0] == 1 + 4  # the group, then each alone
    assert sorted(so for o in written for so in o) == list(range(1, 7))  # no hole
    assert not await stores.events.have_events(["$bad-invite"])
    for room_id in good:
        tag = room_id[1:4]
        assert await stores.events.have_events([f"${tag}0", f"${tag}1"]) == {
            f"${tag}0",
            f"${tag}1",
        }


async def test_an_unknown_room_fails_alone_and_backfill_is_never_grouped(
    stores: Stores,
) -> None:
    await stores.rooms.store_room(ROOMS[0], "10", "@alice:example.org")
    known = stores.events.persist_events(ROOMS[0], chain(ROOMS[0], 1), grouped=True)
    unknown = stores.events.persist_events(ROOMS[1], chain(ROOMS[1], 1), grouped=True)
    outcomes = await asyncio.gather(known, unknown, return_exceptions=True)
    assert outcomes[0] == [1]
    assert isinstance(outcomes[1], StorageError) and ROOMS[1] in str(outcomes[1])
    old = make_event("$old", room_id=ROOMS[0], depth=1)
    assert await stores.events.persist_events(
        ROOMS[0], [PersistItem(old)], backfilled=True, grouped=True
    ) == [-1]


async def test_a_request_cancelled_before_its_group_starts_is_not_written(
    stores: Stores,
) -> None:
    for room_id in ROOMS[:2]:
        await stores.rooms.store_room(room_id, "10", "@alice:example.org")
    hooked: list[str] = []

    def persist(room_id: str) -> asyncio.Future[list[int]]:
        return asyncio.ensure_future(
            stores.events.persist_events(
                room_id,
                chain(room_id, 1),
                in_commit_order=lambda: hooked.append(room_id),
                grouped=True,
            )
        )

    kept, dropped = persist(ROOMS[0]), persist(ROOMS[1])
    await asyncio.sleep(0)  # both queued; the committer has not started
    dropped.cancel()
    assert await kept == [1]
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert hooked == [ROOMS[0]]
    assert not await stores.events.have_events([f"${ROOMS[1][1:4]}0"])
    assert await stores.events.get_current_stream_position() == 1
