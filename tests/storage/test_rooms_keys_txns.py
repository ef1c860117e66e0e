"""RoomStore, ServerKeyStore and TransactionStore contracts."""

from __future__ import annotations

import asyncio

from homeserver.storage import Stores

ROOM = "!room:example.org"


async def test_rooms(stores: Stores) -> None:
    rooms = stores.rooms
    assert await rooms.store_room(ROOM, "10", "@alice:example.org", created_ts=42) is True
    assert await rooms.store_room(ROOM, "11") is False  # known rooms are not overwritten
    assert await rooms.get_room_version(ROOM) == "10"
    assert await rooms.get_room_version("!nope:x") is None
    info = await rooms.get_room(ROOM)
    assert (info.room_id, info.room_version, info.creator, info.is_public, info.created_ts) == (
        ROOM,
        "10",
        "@alice:example.org",
        False,
        42,
    )
    assert await rooms.get_room("!nope:x") is None


async def test_public_room_list(stores: Stores) -> None:
    rooms = stores.rooms
    for name in ("!c:x", "!a:x", "!b:x", "!d:x"):
        await rooms.store_room(name, "10", is_public=name != "!d:x")
    assert await rooms.get_public_room_ids() == ["!a:x", "!b:x", "!c:x"]
    assert await rooms.get_public_room_ids(limit=2) == ["!a:x", "!b:x"]
    assert await rooms.get_public_room_ids(limit=2, since="!b:x") == ["!c:x"]
    assert await rooms.set_room_is_public("!a:x", False) is True
    assert await rooms.set_room_is_public("!zz:x", True) is False
    assert await rooms.get_public_room_ids() == ["!b:x", "!c:x"]
    assert await rooms.count_public_rooms() == 2


async def test_aliases(stores: Stores) -> None:
    rooms = stores.rooms
    assert await rooms.create_alias("#a:x", ROOM, ["x", "y"], "@alice:x") is True
    assert await rooms.create_alias("#a:x", "!other:x", ["x"]) is False
    await rooms.create_alias("#b:x", ROOM, ["x"])
    a = await rooms.get_alias("#a:x")
    assert (a.room_id, a.servers, a.creator) == (ROOM, ["x", "y"], "@alice:x")
    assert await rooms.get_aliases_for_room(ROOM) == ["#a:x", "#b:x"]
    assert await rooms.delete_alias("#a:x") is True
    assert await rooms.delete_alias("#a:x") is False
    assert await rooms.get_alias("#a:x") is None


async def test_server_keys(stores: Stores) -> None:
    keys = stores.server_keys
    await keys.store_server_keys(
        "remote.test",
        [("ed25519:a", "AAAA", 1000, None), ("ed25519:old", "BBBB", 500, 400)],
        fetched_ts=10,
    )
    assert await keys.get_server_keys("remote.test", ["ed25519:a", "ed25519:zz"]) == {
        "ed25519:a": ("AAAA", 1000, None)
    }
    assert await keys.get_server_keys("remote.test") == {
        "ed25519:a": ("AAAA", 1000, None),
        "ed25519:old": ("BBBB", 500, 400),
    }
    assert await keys.get_server_keys("remote.test", []) == {}
    await keys.store_server_keys("remote.test", [("ed25519:a", "AAAA", 9000, None)], fetched_ts=20)
    assert (await keys.get_server_keys("remote.test", ["ed25519:a"]))["ed25519:a"][1] == 9000
    assert await keys.get_server_keys("other.test") == {}


async def test_client_and_inbound_txns(stores: Stores) -> None:
    tx = stores.transactions
    assert await tx.get_client_txn("@a:x", "D1", "t1") is None
    assert await tx.set_client_txn("@a:x", "D1", "t1", "$e1") == "$e1"
    assert await tx.set_client_txn("@a:x", "D1", "t1", "$e2") == "$e1"  # first wins
    assert await tx.get_client_txn("@a:x", "D1", "t1") == "$e1"
    assert await tx.get_client_txn("@a:x", "D2", "t1") is None  # scoped per device
    assert await tx.set_client_txn("@a:x", None, "t1", "$e3") == "$e3"
    assert await tx.get_client_txn("@a:x", None, "t1") == "$e3"

    resp = {"pdus": {"$x": {}, "$y": {"error": "bad ünicode"}}}
    assert await tx.get_inbound_txn("remote.test", "txn1") is None
    await tx.set_inbound_txn("remote.test", "txn1", resp)
    assert await tx.get_inbound_txn("remote.test", "txn1") == resp
    assert await tx.get_inbound_txn("other.test", "txn1") is None


async def test_client_txn_lookups_asked_at_once_share_queries(stores: Stores) -> None:
    """Every send asks for its transaction ID; asks made together are answered by one
    query per 100 (a key asked twice, a device of None, misses among hits)."""
    tx = stores.transactions
    for i in range(0, 250, 2):
        await tx.set_client_txn(f"@u{i % 7}:x", None if i % 3 else "D", f"t{i}", f"$e{i}")
    keys = [(f"@u{i % 7}:x", None if i % 3 else "D", f"t{i}") for i in range(250)]
    keys += keys[:10]
    answers = await asyncio.gather(*(tx.get_client_txn(*k) for k in keys))
    expected = [f"$e{i}" if i % 2 == 0 else None for i in range(250)]
    assert answers == expected + expected[:10]
    # Scoped per device: the same user and txn ID on another device is another txn.
    assert await tx.get_client_txn("@u0:x", "OTHER", "t0") is None


async def test_concurrent_batches_share_a_commit_and_keep_their_order(
    stores: Stores,
) -> None:
    """Many rooms' chains enqueued at once (group commit): each destination gets every
    event once, each chain in its order."""
    tx = stores.transactions
    chains = {r: [f"$r{r}e{i}" for i in range(5)] for r in range(12)}
    await asyncio.gather(
        *(tx.enqueue_pdu_batch(["a.test", "b.test"], ids) for ids in chains.values()),
        *(tx.enqueue_pdus(["a.test"], f"$single{i}") for i in range(6)),
    )
    for dest in ("a.test", "b.test"):
        queued = (await tx.peek(dest, pdu_limit=1_000, edu_limit=1)).pdu_event_ids
        expected = [e for ids in chains.values() for e in ids]
        if dest == "a.test":
            expected += [f"$single{i}" for i in range(6)]
        assert sorted(queued) == sorted(expected)
        for ids in chains.values():
            assert [e for e in queued if e in ids] == ids


async def test_outbox_is_ordered_and_acked_as_a_prefix(stores: Stores) -> None:
    tx = stores.transactions
    assert await tx.destinations_with_pending() == []
    assert not await tx.peek("a.test")
    for i in range(3):
        await tx.enqueue_pdus(["a.test", "b.test", "a.test"], f"$p{i}")
    await tx.enqueue_edu("a.test", {"edu_type": "m.typing", "content": {"n": 1}})
    await tx.enqueue_pdus(["a.test"], "$p3")
    assert await tx.destinations_with_pending() == ["a.test", "b.test"]

    batch = await tx.peek("a.test", pdu_limit=2, edu_limit=10)
    assert batch.pdu_event_ids == ["$p0", "$p1"] and batch.edus == []
    # The EDU after $p2 is not skipped ahead of it: a batch is a prefix of the queue.
    assert await tx.ack("a.test", batch.up_to_id) == 2
    # $p2, then the EDU; $p3 would exceed the PDU limit so the batch stops before it.
    batch = await tx.peek("a.test", pdu_limit=1, edu_limit=10)
    assert batch.pdu_event_ids == ["$p2"]
    assert batch.edus == [{"edu_type": "m.typing", "content": {"n": 1}}]
    await tx.ack("a.test", batch.up_to_id)
    batch = await tx.peek("a.test")
    assert batch.pdu_event_ids == ["$p3"] and batch.edus == []
    await tx.ack("a.test", batch.up_to_id)
    assert not await tx.peek("a.test")
    assert await tx.destinations_with_pending() == ["b.test"]
    assert (await tx.peek("b.test")).pdu_event_ids == ["$p0", "$p1", "$p2"]

    await tx.enqueue_edu("c.test", {"edu_type": "a"})
    await tx.enqueue_edu("c.test", {"edu_type": "b"})
    batch = await tx.peek("c.test", edu_limit=1)
    assert batch.edus == [{"edu_type": "a"}]


async def test_retry_state(stores: Stores) -> None:
    tx = stores.transactions
    assert await tx.get_retry_state("a.test") is None
    await tx.set_retry_state("a.test", 100, 200, 5000)
    s = await tx.get_retry_state("a.test")
    assert (s.failure_ts, s.retry_last_ts, s.retry_interval_ms) == (100, 200, 5000)
    await tx.set_retry_state("a.test", 100, 300, 10000)
    assert (await tx.get_retry_state("a.test")).retry_interval_ms == 10000
    assert [r.destination for r in await tx.get_all_retry_states()] == ["a.test"]
    await tx.clear_retry_state("a.test")
    assert await tx.get_retry_state("a.test") is None
