#!/usr/bin/env python3
"""streambench.py - how many writes a second one stream admits across a deployment.

  PYTHONPATH=. HS_TEST_POSTGRES_DSN=... python bench/streambench.py \\
      [--processes 2 --writers 50 --seconds 10]

Receipts are the most frequent stream write (a reading client marks each message it
shows), and every process writing a stream takes that stream's lock in turn
(storage/postgres_locks.py). Here `--processes` OS processes open one fresh
PostgreSQL schema as a deployment's processes do (`share_writes`) and each runs
`--writers` tasks writing receipts one after another through ReceiptStore (or, with
`--stream account_data`, putting m.fully_read entries: Element's other write per
message read) for `--seconds`: writes per second in all, and PostgreSQL's commits per
write. No HTTP,
no other work: the ceiling the stream's turns leave, not what a deployment serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _config(schema: str) -> dict[str, Any]:
    dsn = os.environ["HS_TEST_POSTGRES_DSN"]
    return {"name": "psycopg2", "args": {"dsn": dsn, "schema": schema, "cp_max": 4}}


async def _write(
    schema: str, stream: str, index: int, writers: int, until: float, seconds: float
) -> int:
    from homeserver.storage import open_database
    from homeserver.storage.account_data import AccountDataStore
    from homeserver.storage.receipts import ReceiptStore

    db = await open_database(_config(schema), migrate=False)
    db.share_writes()  # type: ignore[attr-defined]
    receipts, account_data = ReceiptStore(db), AccountDataStore(db)
    written = 0

    async def writer(w: int) -> None:
        nonlocal written
        n = 0
        user, room = f"@p{index}w{w}:x", f"!r{w % 20}:x"
        while time.time() < until:
            if stream == "receipts":
                await receipts.write(room, "m.read", user, "", f"$e{n}", n)
            else:  # Element's m.fully_read, beside each m.read
                await account_data.put(user, room, "m.fully_read", {"event_id": f"$e{n}"})
            n += 1
            written += 1

    try:
        await asyncio.sleep(max(0.0, until - seconds - time.time()))  # start together
        await asyncio.gather(*(writer(w) for w in range(writers)))
    finally:
        await db.close()
    return written


def _process(
    schema: str, stream: str, index: int, writers: int, until: float, seconds: float, out: Any
) -> None:
    out.put(asyncio.run(_write(schema, stream, index, writers, until, seconds)))


async def _commits(schema: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(os.environ["HS_TEST_POSTGRES_DSN"])
    try:
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _setup(schema: str) -> None:
    from homeserver.storage import open_database

    db = await open_database(_config(schema), migrate=True)
    await db.close()


async def _drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(os.environ["HS_TEST_POSTGRES_DSN"])
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--writers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--stream", choices=["receipts", "account_data"], default="receipts")
    args = p.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_setup(schema))
    try:
        time.sleep(1.5)  # PostgreSQL's statistics are sent at most every second
        before = asyncio.run(_commits(schema))
        until = time.time() + 3 + args.seconds  # 3 s to start and connect
        out: Any = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(
                target=_process,
                args=(schema, args.stream, i, args.writers, until, args.seconds, out),
            )
            for i in range(args.processes)
        ]
        for proc in procs:
            proc.start()
        written = sum(out.get() for _ in procs)
        for proc in procs:
            proc.join()
        time.sleep(1.5)
        commits = asyncio.run(_commits(schema)) - before
    finally:
        asyncio.run(_drop(schema))
    result = {
        "stream": args.stream,
        "processes": args.processes,
        "writers_per_process": args.writers,
        "writes": written,
        "writes_per_s": round(written / args.seconds, 1),
        "pg_commits_per_write": round(commits / max(written, 1), 3),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
