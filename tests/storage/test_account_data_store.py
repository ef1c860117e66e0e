"""AccountDataStore on every backend: the store allocates each write's stream position
inside its transaction (any process of a deployment may write account data)."""

from __future__ import annotations

import asyncio

from homeserver.storage import Database
from homeserver.storage.account_data import AccountDataStore


async def test_positions_are_allocated_unique_and_increasing(db: Database) -> None:
    store = AccountDataStore(db)
    assert await store.get_max_stream_id() == 0
    first = await store.put("@a:x", "", "m.direct", {"n": 1})
    room = await store.put("@a:x", "!r:x", "m.tag", {"tags": {}})
    assert (first, room) == (1, 2)
    # Replacing an entry moves it to a new, higher position (sync sees it again).
    again = await store.put("@a:x", "", "m.direct", {"n": 2})
    assert again == 3 and await store.get("@a:x", "", "m.direct") == {"n": 2}
    since = await store.get_since("@a:x", 1)
    assert [(e.room_id, e.data_type, e.stream_id) for e in since] == [
        ("!r:x", "m.tag", 2),
        ("", "m.direct", 3),
    ]
    # Concurrent writers get distinct positions, each the entry's stored one.
    positions = await asyncio.gather(
        *(store.put(f"@u{i}:x", "", "org.example", {"i": i}) for i in range(20))
    )
    assert sorted(positions) == list(range(4, 24))
    assert await store.get_max_stream_id() == 23


async def test_modify_reads_and_writes_in_one_transaction(db: Database) -> None:
    store = AccountDataStore(db)

    def add(key: str):  # type: ignore[no-untyped-def]
        return lambda content: {**(content or {}), key: True}

    # Concurrent read-modify-writes of one entry: none is lost.
    positions = await asyncio.gather(
        *(store.modify("@a:x", "!r:x", "m.tag", add(f"k{i}")) for i in range(20))
    )
    assert sorted(p for p in positions if p is not None) == list(range(1, 21))
    assert await store.get("@a:x", "!r:x", "m.tag") == {f"k{i}": True for i in range(20)}
    # A change that returns None writes nothing and allocates no position.
    assert await store.modify("@a:x", "!r:x", "m.tag", lambda content: None) is None
    assert await store.get_max_stream_id() == 20


async def test_entries_put_at_once_share_transactions(db: Database) -> None:
    """40 puts at once (Element's m.fully_read per /read_markers; some of one entry):
    positions 1..40, each once, in far fewer transactions than puts, and each entry
    holds its last put at the position that put returned."""
    store = AccountDataStore(db)
    kinds: list[str] = []
    db.observer = lambda kind, waited, took: kinds.append(kind)
    written = await asyncio.gather(
        *(
            store.put(f"@u{i % 10}:x", "!r:x", "m.fully_read", {"event_id": f"$e{i}"})
            for i in range(40)
        )
    )
    assert sorted(written) == list(range(1, 41))
    assert kinds.count("write") <= 3, kinds  # one transaction each before
    for u in range(10):
        last = u + 30  # the user's puts were submitted in order u, u + 10, u + 20, u + 30
        assert await store.get(f"@u{u}:x", "!r:x", "m.fully_read") == {"event_id": f"$e{last}"}
        [entry] = await store.get_since(f"@u{u}:x", 0)
        assert entry.stream_id == written[last]
    assert await store.get_max_stream_id() == 40
