"""ReceiptStore on every backend: receipts written at once share transactions (group
commit), each still gets a position of its own, and one bad receipt fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from homeserver.storage import Database
from homeserver.storage.receipts import ReceiptStore


def _count_writes(db: Database) -> list[str]:
    kinds: list[str] = []
    db.observer = lambda kind, waited, took: kinds.append(kind)
    return kinds


async def test_receipts_written_at_once_share_transactions(db: Database) -> None:
    """60 receipts at once (20 users, 3 each in one room: the later ones replace the
    earlier): positions 1..60, each once, in far fewer transactions than receipts;
    each user's stored receipt is their last, at the position its write returned."""
    store = ReceiptStore(db)
    moved: list[tuple[str, str]] = []
    store._read_marker_moved = lambda user, room: moved.append((user, room))
    kinds = _count_writes(db)

    async def write(i: int) -> tuple[int, int]:
        user = f"@u{i % 20}:x"
        return i, await store.write("!r:x", "m.read", user, "", f"$e{i}", 1000 + i)

    written = await asyncio.gather(*(write(i) for i in range(60)))
    assert sorted(position for _, position in written) == list(range(1, 61))
    assert kinds.count("write") <= 3, kinds  # one transaction each before
    assert len(moved) == 60 and set(moved) == {(f"@u{i}:x", "!r:x") for i in range(20)}
    position_of = dict(written)
    stored = {r.user_id: r for r in await store.get_for_rooms(["!r:x"])}
    assert len(stored) == 20
    for u in range(20):
        # The user's three writes were submitted in order i = u, u + 20, u + 40.
        last = u + 40
        receipt = stored[f"@u{u}:x"]
        assert (receipt.event_id, receipt.ts) == (f"$e{last}", 1000 + last)
        assert receipt.stream_id == position_of[last]
        assert position_of[u] < position_of[u + 20] < position_of[last]
    since = await store.get_since(0, 60)
    assert [r.stream_id for r in since] == sorted(position_of[u + 40] for u in range(20))
    assert await store.get_max_stream_id() == 60


async def test_a_bad_receipt_fails_alone(db: Database) -> None:
    """A receipt the database refuses (here one without an event ID) fails its own
    write only: the others of its group are written, one transaction each."""
    store = ReceiptStore(db)
    writes: list[Any] = [
        store.write("!r:x", "m.read", f"@u{i}:x", "", None if i == 3 else f"$e{i}", i)  # type: ignore[arg-type]
        for i in range(8)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [3]
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 8))
    stored = {r.user_id for r in await store.get_for_rooms(["!r:x"])}
    assert stored == {f"@u{i}:x" for i in range(8)} - {"@u3:x"}


@pytest.mark.parametrize("count", [1, 2])
async def test_positions_continue_after_groups(db: Database, count: int) -> None:
    """Groups of any size continue from the newest position, across groups."""
    store = ReceiptStore(db)
    first = await asyncio.gather(
        *(store.write("!r:x", "m.read", f"@a{i}:x", "", "$e", 1) for i in range(count))
    )
    then = await store.write("!r:x", "m.read.private", "@a0:x", "", "$f", 2)
    assert sorted(first) == list(range(1, count + 1)) and then == count + 1
