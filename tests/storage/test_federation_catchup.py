"""The outbox's bounds (federation/sender.py): catch-up events for destinations that
are backing off, transient EDUs not queued for them, and a backlog's compaction, on
both backends."""

from __future__ import annotations

from dataclasses import replace

import homeserver.storage.transactions as transactions
from homeserver.storage import Database, PersistItem, Stores
from homeserver.storage.transactions import BacklogBounds, TransactionStore

from .conftest import make_event
from .test_admin_stores import make_room

ROOM_A, ROOM_B = "!a:example.org", "!b:example.org"
ALICE = "@alice:example.org"
UP, DOWN = "up.test", "down.test"


async def messages(stores: Stores, room_id: str, tag: str, n: int) -> list[str]:
    ids = [f"${tag}{i}" for i in range(n)]
    for event_id in ids:
        event = make_event(event_id, room_id=room_id, sender=ALICE, content={"body": event_id})
        await stores.events.persist_events(
            room_id, [PersistItem(event)], new_extremities=[event_id]
        )
    return ids


async def outbox_pdus(db: Database, destination: str) -> list[str]:
    rows = await db.fetch(
        "SELECT event_id FROM federation_outbox WHERE destination = $1"
        " AND event_id IS NOT NULL ORDER BY id",
        destination,
    )
    return [r[0] for r in rows]


async def catch_up(db: Database, destination: str) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT room_id, event_id FROM federation_catchup WHERE destination = $1", destination
    )
    return {r[0]: r[1] for r in rows}


async def test_a_destination_backing_off_gets_its_rooms_newest_events(
    db: Database, stores: Stores
) -> None:
    await make_room(stores, ROOM_A, None, [ALICE])
    await make_room(stores, ROOM_B, None, [ALICE])
    tx = stores.transactions
    first = await messages(stores, ROOM_A, "f", 1)
    await tx.enqueue_pdus([UP, DOWN], first[0])  # both up: both queued
    await tx.set_retry_state(DOWN, 1000, 1000, 10_000)
    in_a = await messages(stores, ROOM_A, "a", 5)
    in_b = await messages(stores, ROOM_B, "b", 2)
    for event_id in [*in_a, *in_b]:
        await tx.enqueue_pdus([UP, DOWN], event_id)
    # An older event arriving late (out of order) never replaces a newer one.
    await tx.enqueue_pdus([DOWN], in_a[0])

    assert await outbox_pdus(db, UP) == [*first, *in_a, *in_b]
    assert await outbox_pdus(db, DOWN) == first
    assert await catch_up(db, DOWN) == {ROOM_A: in_a[-1], ROOM_B: in_b[-1]}
    # Typing is not queued for it (stale by the time it answers); a receipt is.
    await tx.enqueue_edu(DOWN, {"edu_type": "m.typing", "content": {}}, transient=True)
    await tx.enqueue_edu(DOWN, {"edu_type": "m.receipt", "content": {}})
    await tx.enqueue_edu(UP, {"edu_type": "m.typing", "content": {}}, transient=True)
    assert (await tx.peek(UP, 50, 100)).edus == [{"edu_type": "m.typing", "content": {}}]

    # Catch-up events first (oldest first), then the queue.
    batch = await tx.peek(DOWN, 50, 100)
    assert batch.pdu_event_ids == [in_a[-1], in_b[-1], *first]
    assert batch.catch_up == [(ROOM_A, in_a[-1]), (ROOM_B, in_b[-1])]
    assert batch.edus == [{"edu_type": "m.receipt", "content": {}}]
    assert await tx.destinations_with_pending() == [DOWN, UP]
    # A newer event of room B arrives while that batch is in flight: acking the batch
    # keeps it.
    newer_b = await messages(stores, ROOM_B, "n", 1)
    await tx.enqueue_pdus([DOWN], newer_b[0])
    await tx.ack_delivery(DOWN, batch.up_to_id, batch.pdu_event_ids, 5, batch.catch_up)
    assert await catch_up(db, DOWN) == {ROOM_B: newer_b[0]}
    assert await outbox_pdus(db, DOWN) == []
    batch = await tx.peek(DOWN, 50, 100)
    assert batch.pdu_event_ids == newer_b and batch.up_to_id == 0
    await tx.ack(DOWN, batch.up_to_id, batch.catch_up)  # refused for good: gone too
    assert not await tx.peek(DOWN, 50, 100)
    assert await tx.destinations_with_pending() == [UP]
    # Back up: queued again.
    await tx.clear_retry_state(DOWN)
    await tx.enqueue_pdus([DOWN], newer_b[0])
    assert await outbox_pdus(db, DOWN) == newer_b


async def test_a_backlog_past_its_bounds_is_compacted(db: Database, stores: Stores) -> None:
    await make_room(stores, ROOM_A, None, [ALICE])
    await make_room(stores, ROOM_B, None, [ALICE])
    tx = stores.transactions
    in_a = await messages(stores, ROOM_A, "a", 6)
    in_b = await messages(stores, ROOM_B, "b", 3)
    for i, event_id in enumerate([*in_a, *in_b]):
        await tx.enqueue_pdus([UP], event_id)
        await tx.enqueue_edu(UP, {"edu_type": "m.receipt", "content": {"n": i}})
        await tx.enqueue_edu(UP, {"edu_type": "m.direct_to_device", "content": {"n": i}})
    await tx.enqueue_pdus([UP], "$purged")  # no such event any more: just dropped
    trimmable = ("m.typing", "m.presence", "m.receipt")
    # Within bounds: nothing changes.
    assert not await tx.compact(UP, BacklogBounds(10, trimmable, 9))
    assert len(await outbox_pdus(db, UP)) == 10

    transactions.COMPACT_BATCH, saved = 4, transactions.COMPACT_BATCH  # several batches
    try:
        assert await tx.compact(UP, BacklogBounds(5, trimmable, 3))
    finally:
        transactions.COMPACT_BATCH = saved
    assert await outbox_pdus(db, UP) == []
    assert await catch_up(db, UP) == {ROOM_A: in_a[-1], ROOM_B: in_b[-1]}
    batch = await tx.peek(UP, 50, 100)
    # The three newest receipts stay; to-device messages have no cap here: all stay.
    assert [e["content"]["n"] for e in batch.edus if e["edu_type"] == "m.receipt"] == [6, 7, 8]
    assert await queued_to_device(tx) == list(range(9))
    assert not await tx.compact(UP, BacklogBounds(5, trimmable, 3))
    # With a cap of their own, the oldest past it go; the receipts are not touched.
    capped = BacklogBounds(5, trimmable, 3, capped_edu_types=("m.direct_to_device",))
    assert not await tx.compact(UP, replace(capped, max_capped_edus=9))
    assert await tx.compact(UP, replace(capped, max_capped_edus=4))
    assert await queued_to_device(tx) == [5, 6, 7, 8]
    batch = await tx.peek(UP, 50, 100)
    assert [e["content"]["n"] for e in batch.edus if e["edu_type"] == "m.receipt"] == [6, 7, 8]
    assert await tx.trim_edus(UP, ["m.direct_to_device"], 1) == 3
    assert await queued_to_device(tx) == [8]


async def queued_to_device(tx: TransactionStore) -> list[int]:
    batch = await tx.peek(UP, 50, 100)
    return [e["content"]["n"] for e in batch.edus if e["edu_type"] == "m.direct_to_device"]


async def test_a_stale_view_of_who_is_down_never_loses_an_event(
    db: Database, stores: Stores
) -> None:
    """Another process (a federation sender worker) changes a destination's state
    while this one's view is at most DOWN_CACHE_S old: the event lands in the queue or
    as a catch-up event, and the next batch carries it either way."""
    await make_room(stores, ROOM_A, None, [ALICE])
    here, sender = stores.transactions, transactions.TransactionStore(db)
    first, second = await messages(stores, ROOM_A, "s", 2)
    await here.enqueue_pdus([DOWN], first)  # reads the view: nobody is down
    await sender.set_retry_state(DOWN, 1000, 1000, 10_000)  # elsewhere: DOWN fails
    await here.enqueue_pdus([DOWN], second)  # stale: queued, not a catch-up event
    assert await outbox_pdus(db, DOWN) == [first, second]
    assert (await sender.peek(DOWN, 50, 100)).pdu_event_ids == [first, second]

    here._failing_read_at -= transactions.DOWN_CACHE_S + 1  # the view ages out
    (third,) = await messages(stores, ROOM_A, "t", 1)
    await here.enqueue_pdus([DOWN], third)
    await sender.clear_retry_state(DOWN)  # elsewhere: DOWN is back
    (fourth,) = await messages(stores, ROOM_A, "u", 1)
    await here.enqueue_pdus([DOWN], fourth)  # stale again: a catch-up event
    assert await catch_up(db, DOWN) == {ROOM_A: fourth}
    batch = await sender.peek(DOWN, 50, 100)
    assert batch.pdu_event_ids == [fourth, first, second]


async def test_device_list_updates_are_coalesced_to_the_newest_per_user(
    db: Database, stores: Stores
) -> None:
    """Past the bound, a backlog keeps one device-list update and one signing-key
    update per user (the newest), in queue order; to-device messages all stay."""
    tx = stores.transactions
    users = ["@a:example.org", "@b:example.org"]
    for i in range(6):
        user = users[i % 2]
        await tx.enqueue_edu(
            DOWN, {"edu_type": "m.device_list_update", "content": {"user_id": user, "n": i}}
        )
        await tx.enqueue_edu(DOWN, {"edu_type": "m.direct_to_device", "content": {"n": i}})
    for i in range(2):
        await tx.enqueue_edu(
            DOWN, {"edu_type": "m.signing_key_update", "content": {"user_id": users[0], "n": i}}
        )
    bounds = BacklogBounds(
        10, coalescable_edu_types=("m.device_list_update", "m.signing_key_update")
    )
    assert not await tx.compact(DOWN, replace(bounds, max_coalescable_edus=8))
    transactions.COMPACT_BATCH, saved = 3, transactions.COMPACT_BATCH  # several pages
    try:
        assert await tx.compact(DOWN, replace(bounds, max_coalescable_edus=2))
    finally:
        transactions.COMPACT_BATCH = saved
    edus = (await tx.peek(DOWN, 50, 100)).edus
    assert [(e["edu_type"], e["content"]["n"]) for e in edus] == [
        ("m.direct_to_device", 0),
        ("m.direct_to_device", 1),
        ("m.direct_to_device", 2),
        ("m.direct_to_device", 3),
        ("m.device_list_update", 4),
        ("m.direct_to_device", 4),
        ("m.device_list_update", 5),
        ("m.direct_to_device", 5),
        ("m.signing_key_update", 1),
    ]
