"""The locks event persisters share (storage/postgres_locks.py), on a real PostgreSQL:
two databases opened on one schema stand for two processes of a deployment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import homeserver.storage.postgres_locks as postgres_locks
from homeserver.storage import open_database
from homeserver.storage.errors import DatabaseUnavailableError

from .conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, postgres_test_config


async def _two(migrate: bool) -> AsyncIterator[tuple[Any, Any]]:
    config = postgres_test_config()
    if config is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    first = await open_database(config, migrate=migrate)
    second = await open_database(config, migrate=False)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
        await drop_postgres_schema(config)


@pytest.fixture
async def two_processes() -> AsyncIterator[tuple[Any, Any]]:
    async for pair in _two(migrate=False):
        yield pair


@pytest.fixture
async def two_migrated_processes() -> AsyncIterator[tuple[Any, Any]]:
    """The same on the homeserver's schema."""
    async for pair in _two(migrate=True):
        yield pair


async def test_a_room_is_written_by_one_process_at_a_time(two_processes: Any) -> None:
    first, second = two_processes
    a, b = first.share_writes(), second.share_writes()
    order: list[str] = []
    try:
        async with a.hold("room !r:x"):
            waiting = asyncio.create_task(_hold(b, "room !r:x", order, "b"))
            async with b.hold("room !other:x"):  # another room is not held up
                order.append("other")
            await asyncio.sleep(0.2)
            order.append("a done")
        await waiting
        assert order == ["other", "a done", "b"]
    finally:
        await a.close()
        await b.close()


async def _hold(locks: Any, name: str, order: list[str], tag: str) -> None:
    async with locks.hold(name):
        order.append(tag)


async def test_a_dead_holders_rooms_are_free_at_once(two_processes: Any) -> None:
    first, second = two_processes
    a, b = first.share_writes(), second.share_writes()
    try:
        entered = asyncio.Event()

        async def holder() -> None:
            async with a.hold("room !r:x"):
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(holder())
        await entered.wait()
        a._conn.terminate()  # what a SIGKILLed process's connection does
        async with asyncio.timeout(5):
            async with b.hold("room !r:x"):
                pass
        task.cancel()
        with pytest.raises((asyncio.CancelledError, DatabaseUnavailableError)):
            await task
    finally:
        await a.close()
        await b.close()


async def test_a_room_held_too_long_answers_unavailable(
    two_processes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_processes
    a, b = first.share_writes(), second.share_writes()
    monkeypatch.setattr(postgres_locks, "WAIT_MAX_S", 0.3)
    try:
        async with a.hold("room !r:x"):
            with pytest.raises(DatabaseUnavailableError, match="stayed locked"):
                async with b.hold("room !r:x"):
                    pass
    finally:
        await a.close()
        await b.close()


async def test_write_transactions_of_two_processes_take_turns(two_processes: Any) -> None:
    """MAX(...) + 1 allocations in concurrent transactions of two processes: with the
    shared write lock none collide."""
    first, second = two_processes
    first.share_writes()
    second.share_writes()
    await first.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")

    async def allocate(db: Any) -> None:
        for _ in range(30):
            async with db.transaction() as conn:
                high = await conn.fetchval("SELECT MAX(id) FROM t")
                await asyncio.sleep(0.001)  # the other process runs meanwhile
                await conn.execute("INSERT INTO t VALUES ($1)", int(high or 0) + 1)

    await asyncio.gather(allocate(first), allocate(second))
    assert await first.fetchval("SELECT COUNT(*) FROM t") == 60


async def test_alongside_transactions_run_together_and_never_beside_one_alone(
    two_processes: Any,
) -> None:
    """Push action batches of two processes (`turn="alongside"`) hold the lock at the
    same time; a transaction that must be alone (the retention fold, a MAX + 1
    allocation) waits for them, and they wait for it."""
    first, second = two_processes
    first.share_writes()
    second.share_writes()
    turns: list[tuple[str, float]] = []  # what the metrics are told (the waits)
    second.observer = lambda kind, waited, took: turns.append((kind, waited))
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def alongside(db: Any, tag: str, hold: bool) -> None:
        async with db.transaction(turn="alongside"):
            order.append(f"{tag} in")
            if hold:
                inside.set()
                await release.wait()
            order.append(f"{tag} out")

    async def alone(db: Any, tag: str) -> None:
        async with db.transaction():
            order.append(f"{tag} in")
            await asyncio.sleep(0.1)
            order.append(f"{tag} out")

    holder = asyncio.create_task(alongside(first, "a", hold=True))
    await inside.wait()
    beside = asyncio.create_task(alongside(second, "b", hold=False))
    try:  # beside a held alongside one: at once
        await asyncio.wait_for(asyncio.shield(beside), 5)
    except TimeoutError:
        release.set()  # (let the holder go: the fixture's teardown waits for it)
        await asyncio.gather(holder, beside)
        raise AssertionError(f"an alongside transaction waited for another: {order}") from None
    waiting = asyncio.create_task(alone(second, "c"))
    await asyncio.sleep(0.2)
    release.set()
    await holder
    await waiting
    assert order == ["a in", "b in", "b out", "a out", "c in", "c out"]  # c waited for a
    (b, b_waited), (c, c_waited) = [t for t in turns if t[0].startswith("turn")]
    assert (b, c) == ("turn alongside", "turn alone")
    assert b_waited < 0.1 and c_waited >= 0.15, turns  # b beside a at once, c after it
    # And an alongside one waits for an alone one.
    order.clear()
    blocking = asyncio.create_task(alone(first, "d"))
    await asyncio.sleep(0.02)
    await alongside(second, "e", hold=False)
    await blocking
    assert order == ["d in", "d out", "e in", "e out"]


async def test_a_lock_connection_left_mid_operation_is_unavailable_not_a_crash() -> None:
    """A PostgreSQL restart left the lock connection mid-operation: releasing the lock
    raised asyncpg's InternalClientError, which escaped as a 500 (CI). It is now the
    connection being gone (the lock with it): the room's write ends with the error it
    had, and the next lock takes a new connection."""
    import asyncpg

    from homeserver.storage.postgres_locks import SessionLocks

    class Conn:
        def __init__(self, broken: bool) -> None:
            self.broken, self.terminated = broken, False

        def is_closed(self) -> bool:
            return self.terminated

        def terminate(self) -> None:
            self.terminated = True

        async def fetchval(self, sql: str, key: int) -> bool:
            if self.broken and "unlock" in sql:
                raise asyncpg.InternalClientError("cannot switch to state 12")
            return True

    made: list[Conn] = []

    async def connect() -> Conn:
        made.append(Conn(broken=not made))
        return made[-1]

    locks = SessionLocks(connect, "s")
    with pytest.raises(RuntimeError, match="the write failed"):
        async with locks.hold("room"):
            raise RuntimeError("the write failed")
    assert made[0].terminated
    async with locks.hold("room"):
        pass
    assert len(made) == 2 and not made[1].terminated


async def test_each_streams_writes_take_turns_beside_other_streams(two_processes: Any) -> None:
    """Receipts, to-device messages, account data and device-list changes of two
    processes (`stream=`): one stream's transactions wait for each other (they allocate
    its positions as MAX + 1), another stream's run beside them, and a transaction that
    must be alone still waits for all of them."""
    first, second = two_processes
    first.share_writes()
    second.share_writes()
    turns: list[str] = []
    second.observer = lambda kind, waited, took: turns.append(kind)
    order: list[str] = []
    inside, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with first.transaction(turn="alongside", stream="receipts"):
            order.append("receipts a in")
            inside.set()
            await release.wait()
            order.append("receipts a out")

    async def write(tag: str, **turn: Any) -> None:
        async with second.transaction(**turn):
            order.append(tag)

    held = asyncio.create_task(holder())
    await inside.wait()
    try:
        async with asyncio.timeout(5):  # another stream, and push actions: at once
            await write("to_device b", turn="alongside", stream="to_device")
            await write("push b", turn="alongside")
        same = asyncio.create_task(write("receipts b", turn="alongside", stream="receipts"))
        await asyncio.sleep(0.2)
        assert not same.done(), order  # the same stream waits
        release.set()
        await asyncio.gather(held, same)
    finally:
        release.set()
        await held
    assert order == ["receipts a in", "to_device b", "push b", "receipts a out", "receipts b"]
    waits = [kind for kind in turns if kind.startswith("turn ")]  # the metric's labels
    assert waits == ["turn to_device", "turn alongside", "turn receipts"]

    # An alone transaction excludes them, and they it.
    order.clear()
    blocking = asyncio.create_task(write("alone b"))
    await asyncio.sleep(0.02)
    async with first.transaction(turn="alongside", stream="account_data"):
        order.append("account_data a")
    await blocking
    assert order == ["alone b", "account_data a"]
    with pytest.raises(ValueError, match="alongside"):
        async with first.transaction(stream="receipts"):
            pass


async def test_receipts_of_two_processes_get_unique_positions(
    two_migrated_processes: Any,
) -> None:
    """The receipts store itself, 40 writes from each of two processes at once: every
    position is handed out once, and the newest is the count."""
    from homeserver.storage.receipts import ReceiptStore

    first, second = two_migrated_processes
    first.share_writes()
    second.share_writes()
    stores = [ReceiptStore(first), ReceiptStore(second)]

    async def write(i: int) -> int:
        return await stores[i % 2].write("!r:x", "m.read", f"@u{i}:x", "", f"$e{i}", i)

    positions = await asyncio.gather(*(write(i) for i in range(80)))
    assert sorted(positions) == list(range(1, 81))
    assert await stores[0].get_max_stream_id() == 80


async def test_federation_outbox_queueing_takes_the_outbox_streams_turn(
    two_migrated_processes: Any,
) -> None:
    """Queueing for federation (every federated event's path on a persister) runs
    beside another process's receipts and push actions, and in turn with its outbox
    writes: ids commit in order, so the sender's "acked up to N" never deletes a
    lower id that committed late."""
    from homeserver.storage.transactions import TransactionStore

    first, second = two_migrated_processes
    first.share_writes()
    second.share_writes()
    turns: list[str] = []
    second.observer = lambda kind, waited, took: turns.append(kind)
    outbox = TransactionStore(second)
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold(**turn: Any) -> None:
        async with first.transaction(**turn):
            inside.set()
            await release.wait()

    held = asyncio.create_task(hold(turn="alongside", stream="receipts"))
    await inside.wait()
    try:
        async with asyncio.timeout(5):
            await outbox.enqueue_pdu_batch(["a.example"], ["$e1"])
            await outbox.enqueue_edu("a.example", {"edu_type": "m.typing", "content": {}})
    finally:
        release.set()
        await held
    assert [k for k in turns if k.startswith("turn ")] == ["turn federation_outbox"] * 2

    inside.clear()
    release.clear()
    held = asyncio.create_task(hold(turn="alongside", stream="federation_outbox"))
    await inside.wait()
    queued = asyncio.create_task(outbox.enqueue_pdu_batch(["a.example"], ["$e2"]))
    await asyncio.sleep(0.2)
    assert not queued.done()  # the outbox's own turn
    release.set()
    await asyncio.gather(held, queued)
    batch = await outbox.peek("a.example")
    assert batch.pdu_event_ids == ["$e1", "$e2"] and len(batch.edus) == 1


async def test_a_client_readers_bookkeeping_writes_run_alongside(
    two_migrated_processes: Any,
) -> None:
    """What a client reader writes while serving syncs (a sliding sync position per
    response, acknowledged to-device messages, devices' last seen), a federation
    inbound worker for each transaction, and the presence writer's rows allocate nothing:
    it runs beside other processes' writes instead of taking the deployment's lock
    alone (where every reader's syncs would take turns with every write)."""
    from homeserver.storage import open_stores
    from homeserver.storage.presence import PresenceRow, PresenceStore
    from homeserver.storage.sliding_sync import SlidingSyncStore, Snapshot
    from homeserver.storage.to_device import ToDeviceStore

    first, second = two_migrated_processes
    first.share_writes()
    second.share_writes()
    stores = await open_stores(second)
    await stores.accounts.create_user("@u:x", None)
    await stores.accounts.upsert_device("@u:x", "D")
    turns: list[str] = []
    second.observer = lambda kind, waited, took: turns.append(kind)
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with first.transaction(turn="alongside"):  # a push-action batch, say
            inside.set()
            await release.wait()

    held = asyncio.create_task(hold())
    await inside.wait()
    try:
        async with asyncio.timeout(5):
            await SlidingSyncStore(second).put("@u:x", "D", "c", 7, Snapshot("s1", {}), None)
            assert await ToDeviceStore(second).delete_messages_up_to("@u:x", "D", 10) == 0
            await stores.accounts.update_devices_last_seen([("@u:x", "D", 5, "1.2.3.4", "ua")])
            # And a federation inbound worker's record of each transaction it answered.
            await stores.transactions.set_inbound_txn("peer.example", "t1", {"pdus": {}})
            # And the presence writer's rows (positions from its own counter).
            await PresenceStore(second).upsert_many(
                [
                    PresenceRow("@v:x", "online", None, 9, True, 3),
                    PresenceRow("@u:x", "unavailable", "away", 8, False, 2),
                ]
            )
    finally:
        release.set()
        await held
    assert [k for k in turns if k.startswith("turn ")] == ["turn alongside"] * 5
    assert {r.user_id: r.stream_id for r in await PresenceStore(second).get_all()} == {
        "@u:x": 2,
        "@v:x": 3,
    }
    assert await stores.transactions.get_inbound_txn("peer.example", "t1") == {"pdus": {}}
    snapshot = await SlidingSyncStore(second).get("@u:x", "D", "c", 7)
    assert snapshot is not None and snapshot.token == "s1"
    device = await stores.accounts.get_device("@u:x", "D")
    assert device is not None and device.last_seen_ts == 5


async def test_the_last_monthly_active_seats_go_once_across_processes(
    two_migrated_processes: Any,
) -> None:
    """Two processes admitting newcomers at once, 40 for 10 seats (max_mau_value): the
    check-and-insert takes its turn deployment-wide (a transaction alone), so exactly
    10 are admitted, whichever process admits them."""
    from homeserver.storage.monthly_active_users import MauStore

    first, second = two_migrated_processes
    first.share_writes()
    second.share_writes()
    stores = [MauStore(first), MauStore(second)]
    admitted = await asyncio.gather(
        *(stores[i % 2].insert_if_room(f"@u{i}:x", 1000 + i, 10, None) for i in range(40))
    )
    assert admitted.count(True) == 10
    assert await stores[0].count() == 10
    for i, ok in enumerate(admitted):
        assert (await stores[1].last_active(f"@u{i}:x") is not None) == ok
