"""The Database interface: placeholders, rows, transactions, isolation, errors."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from homeserver.storage import Database, IntegrityError, StorageError
from homeserver.storage.dialect import SQLITE, dollar_to_qmark, split_sqlite_script


def test_placeholders_rewritten_outside_quotes_only() -> None:
    assert dollar_to_qmark("SELECT $1, $2, $1") == "SELECT ?1, ?2, ?1"
    assert dollar_to_qmark("SELECT '$1', \"a$2\", $3") == "SELECT '$1', \"a$2\", ?3"
    assert dollar_to_qmark("SELECT 'it''s $1', $12") == "SELECT 'it''s $1', ?12"


def test_script_splitting_keeps_triggers_whole() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x INTEGER);
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        UPDATE a SET x = 1;
    END;
    INSERT INTO a VALUES (';');
    """
    stmts = split_sqlite_script(script)
    assert len(stmts) == 3
    assert stmts[1].startswith("CREATE TRIGGER") and stmts[1].endswith("END")
    assert stmts[2] == "INSERT INTO a VALUES (';')"


def test_schema_macros() -> None:
    assert SQLITE.render_schema("id {{auto_id}}") == "id INTEGER PRIMARY KEY AUTOINCREMENT"
    with pytest.raises(ValueError, match="unknown schema macro"):
        SQLITE.render_schema("{{nope}}")


async def _scratch(db: Database) -> None:
    await db.execute("CREATE TABLE scratch (k TEXT PRIMARY KEY, v BIGINT)")


async def test_rows_by_index_and_name(db: Database) -> None:
    await _scratch(db)
    assert await db.execute("INSERT INTO scratch VALUES ($1, $2)", "a", 2**60) == 1
    await db.executemany("INSERT INTO scratch VALUES ($1, $2)", [("b", 2), ("c", 3)])
    row = await db.fetchrow("SELECT k, v FROM scratch WHERE k = $1", "a")
    assert row[0] == "a" and row["v"] == 2**60
    rows = await db.fetch("SELECT k FROM scratch WHERE v < $1 ORDER BY k", 10)
    assert [r["k"] for r in rows] == ["b", "c"]
    assert await db.fetchval("SELECT v FROM scratch WHERE k = $1", "c") == 3
    assert await db.fetchval("SELECT v FROM scratch WHERE k = $1", "zz") is None
    assert await db.fetchrow("SELECT v FROM scratch WHERE k = $1", "zz") is None
    assert await db.execute("UPDATE scratch SET v = v + 1 WHERE v < $1", 10) == 2


async def test_transaction_commits_and_rolls_back(db: Database) -> None:
    await _scratch(db)
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO scratch VALUES ($1, $2)", "kept", 1)
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO scratch VALUES ($1, $2)", "lost", 1)
            assert await conn.fetchval("SELECT COUNT(*) FROM scratch") == 2
            raise RuntimeError("boom")
    assert [r[0] for r in await db.fetch("SELECT k FROM scratch")] == ["kept"]
    # The writer is usable again after a rollback.
    await db.execute("INSERT INTO scratch VALUES ($1, $2)", "after", 1)
    assert await db.fetchval("SELECT COUNT(*) FROM scratch") == 2


async def test_integrity_errors_are_backend_neutral(db: Database) -> None:
    await _scratch(db)
    await db.execute("INSERT INTO scratch VALUES ($1, $2)", "a", 1)
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO scratch VALUES ($1, $2)", "a", 2)
    with pytest.raises(StorageError):
        await db.fetch("SELECT * FROM no_such_table")


async def test_readers_do_not_see_uncommitted_writes(db: Database) -> None:
    await _scratch(db)
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO scratch VALUES ($1, $2)", "pending", 1)
        assert await db.fetchval("SELECT COUNT(*) FROM scratch") == 0
    assert await db.fetchval("SELECT COUNT(*) FROM scratch") == 1


async def test_transactions_are_serialised(db: Database) -> None:
    await _scratch(db)
    await db.execute("INSERT INTO scratch VALUES ($1, $2)", "n", 0)

    async def bump() -> None:
        async with db.transaction() as conn:
            v = await conn.fetchval("SELECT v FROM scratch WHERE k = 'n'")
            await asyncio.sleep(0)
            await conn.execute("UPDATE scratch SET v = $1 WHERE k = 'n'", v + 1)

    await asyncio.gather(*(bump() for _ in range(20)))
    assert await db.fetchval("SELECT v FROM scratch WHERE k = 'n'") == 20


async def test_pragmas(db: Database) -> None:
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    assert (await db.fetchval("PRAGMA journal_mode")).lower() == "wal"
    assert await db.fetchval("PRAGMA foreign_keys") == 1
    assert await db.fetchval("PRAGMA busy_timeout") > 0
    assert await db.fetchval("PRAGMA synchronous") == 2  # FULL
    async with db.transaction() as conn:
        assert await conn.fetchval("PRAGMA synchronous") == 2


async def test_closed_database_refuses_work(db: Database) -> None:
    await db.close()
    with pytest.raises(StorageError, match="closed"):
        await db.fetch("SELECT 1")


async def test_a_cancelled_writer_never_wedges_the_database(db) -> None:
    """A request cancelled at any point of its transaction (a client that went away)
    leaves no transaction open behind it: every later write still works, and what
    the cancelled one wrote is rolled back."""
    await db.execute("CREATE TABLE wedge (n INTEGER)")

    async def write(n: int, hold: asyncio.Event | None = None) -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO wedge (n) VALUES ($1)", n)
            if hold is not None:
                await hold.wait()

    async def write_many(n: int, hold: asyncio.Event) -> None:
        async with db.transaction() as conn:  # (SQLite holds these back)
            await conn.executemany("INSERT INTO wedge (n) VALUES ($1)", [(n,), (n + 1,)])
            await asyncio.sleep(0)
            await conn.executemany("INSERT INTO wedge (n) VALUES ($1)", [(n + 2,)])
            await hold.wait()

    for delay_steps in range(0, 8):
        task = asyncio.ensure_future(write_many(2000 + 10 * delay_steps, asyncio.Event()))
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        task = asyncio.ensure_future(write(1000 + delay_steps, asyncio.Event()))
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await write(delay_steps)  # would fail "within a transaction" if wedged
    rows = await db.fetch("SELECT n FROM wedge ORDER BY n")
    assert [r[0] for r in rows] == list(range(8))


async def test_writes_in_a_transaction_are_read_back_and_roll_back_together(
    db: Database,
) -> None:
    """executemany may be held back to the transaction's next statement (SQLite): the
    transaction still reads its own writes, an error in one of them surfaces inside
    the transaction (at the latest when it commits) and nothing of it stays."""
    await _scratch(db)
    async with db.transaction() as conn:
        await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [("a", 1), ("b", 2)])
        await conn.executemany("UPDATE scratch SET v = v * 10 WHERE k = $1", [("b",)])
        assert await conn.fetchval("SELECT SUM(v) FROM scratch") == 21
        await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [("c", 3)])
        assert await conn.execute("UPDATE scratch SET v = v + 1 WHERE k = 'c'") == 1
    assert await db.fetchval("SELECT SUM(v) FROM scratch") == 25

    for next_statement in ("commit", "fetch", "execute"):
        with pytest.raises(IntegrityError):
            async with db.transaction() as conn:
                await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [("d", 4)])
                await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [("a", 9)])
                if next_statement == "fetch":
                    await conn.fetch("SELECT k FROM scratch")
                elif next_statement == "execute":
                    await conn.execute("DELETE FROM scratch")
        assert await db.fetchval("SELECT SUM(v) FROM scratch") == 25, next_statement
    with pytest.raises(RuntimeError):  # an error of the caller's: held writes are dropped
        async with db.transaction() as conn:
            await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [("e", 5)])
            raise RuntimeError("boom")
    await db.executemany("INSERT INTO scratch VALUES ($1, $2)", [("f", 6)])
    rows = await db.fetch("SELECT k FROM scratch ORDER BY k")
    assert [r["k"] for r in rows] == ["a", "b", "c", "f"]


async def test_sqlite_writes_share_one_trip_with_the_commit(db: Database) -> None:
    """A transaction of one read and several writes costs two trips to SQLite's thread
    (BEGIN with the read, the writes with COMMIT), not one per statement: each trip
    waits for the event loop under the write lock every writer queues on."""
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite's thread")
    await _scratch(db)
    raw = db._raw_writer  # type: ignore[attr-defined]
    trips = 0
    queue = raw._tx

    class Counted:  # the thread keeps reading the queue itself; trips are put here
        def put_nowait(self, item: object) -> None:
            nonlocal trips
            trips += 1
            queue.put_nowait(item)

    raw._tx = Counted()
    try:
        async with db.transaction() as conn:
            assert await conn.fetchval("SELECT COUNT(*) FROM scratch") == 0
            for n in range(5):
                await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [(f"k{n}", n)])
    finally:
        raw._tx = queue
    assert trips == 2
    assert await db.fetchval("SELECT COUNT(*) FROM scratch") == 5


async def test_the_write_lock_is_let_go_once_the_commit_is_queued(db: Database) -> None:
    """SQLite: the next transaction starts while the previous COMMIT is still queued on
    the thread (it queues behind it), and reads what that one committed; a COMMIT that
    fails is rolled back in its own trip, so the next transaction still begins."""
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite's thread")
    await _scratch(db)

    async def put(k: str, v: int) -> None:
        async with db.transaction() as conn:
            current = await conn.fetchval("SELECT COALESCE(MAX(v), 0) FROM scratch")
            await conn.executemany("INSERT INTO scratch VALUES ($1, $2)", [(k, current + v)])

    await asyncio.gather(*(put(f"k{n}", 1) for n in range(50)))
    values = [r[0] for r in await db.fetch("SELECT v FROM scratch ORDER BY v")]
    assert values == list(range(1, 51))  # each saw the one before it committed

    await db.execute(
        "CREATE TABLE deferred (x INTEGER REFERENCES scratch (k) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(IntegrityError):  # fails at COMMIT (a deferred foreign key)
        async with db.transaction() as conn:
            await conn.executemany("INSERT INTO deferred (x) VALUES ($1)", [("nobody",)])
    await put("after", 1)  # would fail "within a transaction" if the COMMIT left it open
    assert await db.fetchval("SELECT COUNT(*) FROM deferred") == 0
    assert await db.fetchval("SELECT v FROM scratch WHERE k = 'after'") == 51
    await db.write_barrier()


async def test_many_rows_insert_as_a_few_statements_with_the_same_outcome(db: Database) -> None:
    """SQLite sends a held-back one-row INSERT for many rows as a few multi-row INSERTs
    (power-of-two sizes): executemany gives the GIL up and waits for it again at every
    row, up to the switch interval each while the event loop is busy. The rows, upserts
    between rows of the same call included, come out as row by row."""
    await _scratch(db)
    await db.execute("CREATE TABLE best (k TEXT PRIMARY KEY, v BIGINT, note TEXT)")
    rows = [(f"k{n % 150}", n, None if n % 3 else f"n{n}") for n in range(200)]
    seen: list[str] = []
    if db.dialect.name == "sqlite":
        await db.set_trace_callback(seen.append)  # type: ignore[attr-defined]
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO best (k, v, note) VALUES ($1, $2, $3)"
            " ON CONFLICT (k) DO UPDATE SET v = excluded.v, note = excluded.note"
            " WHERE excluded.v > best.v",
            rows,
        )
        await conn.executemany(  # a row of expressions, parameters out of order
            "INSERT INTO scratch (v, k) VALUES ($2 * 2, $1)", [(f"x{n}", n) for n in range(5)]
        )
        await conn.executemany(  # quoted text: '$1' is no parameter (row by row)
            "INSERT INTO scratch (k, v) VALUES ($1, length('$1') + $2)", [("q0", 0), ("q1", 1)]
        )
        await conn.executemany("UPDATE scratch SET v = v + $1 WHERE k = $2", [(1, "x0"), (1, "x1")])
    if db.dialect.name == "sqlite":
        await db.set_trace_callback(None)  # type: ignore[attr-defined]
        inserts = [s for s in seen if s.startswith("INSERT INTO best")]
        assert [s.count("), (") + 1 for s in inserts] == [128, 64, 8]
    expected = {}
    for k, v, note in rows:
        expected[k] = (v, note)
    got = {r[0]: (r[1], r[2]) for r in await db.fetch("SELECT k, v, note FROM best")}
    assert got == expected
    scratch = {r[0]: r[1] for r in await db.fetch("SELECT k, v FROM scratch")}
    assert scratch == {"x0": 1, "x1": 3, "x2": 4, "x3": 6, "x4": 8, "q0": 2, "q1": 3}
