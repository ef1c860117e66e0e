#!/usr/bin/env python3
"""searchbench.py - the full-text index: query latency at scale, and its cost on sends.

  PYTHONPATH=. python bench/searchbench.py [--messages 1000000] [--rooms 100]
      [--my-rooms 10] [--sends 3000] [--postgres DSN]

1. Query latency: a fresh database (SQLite, or PostgreSQL with --postgres) gets
   `--messages` indexed messages spread over `--rooms` rooms (words drawn from a Zipf
   distribution over a 20,000-word vocabulary, one message in 50 in Chinese), written
   through the same `index_rows` the events store uses. A user in `--my-rooms` of them
   (10% of the messages by default) then searches: a common, a middling and a rare word,
   a two-word query, a prefix and a Chinese word, in `recent` order (first page of 10
   and the count) and in `rank` order (best 500). Median and p95 per query kind.
2. Send cost: the whole server in process (SQLite), `--sends` messages sent through the
   client API with 10 in flight, with the index on and with index writes switched off;
   alternated three times; the ratio of median throughputs is the index's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from homeserver.search.query import parse_query, to_fts5, to_tsquery
from homeserver.storage import open_database
from homeserver.storage.search import SearchStore, index_rows, search_row

CJK_WORDS = ["你好", "世界", "天气", "朋友", "学习", "工作", "电影", "音乐", "咖啡", "晚饭"]


def log(msg: str) -> None:
    print(f"[searchbench] {msg}", file=sys.stderr, flush=True)


def vocabulary(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(words)


async def fill(db: Any, messages: int, rooms: int, rng: random.Random) -> list[str]:
    vocab = vocabulary(20_000, rng)
    cumulative = list(itertools.accumulate(1 / (i + 1) for i in range(len(vocab))))
    room_ids = [f"!room{i}:bench" for i in range(rooms)]
    batch: list[tuple[Any, ...]] = []
    t0 = time.perf_counter()
    for i in range(messages):
        if i % 50 == 0:
            text = "".join(rng.choice(CJK_WORDS) for _ in range(rng.randint(2, 6)))
        else:
            text = " ".join(rng.choices(vocab, cum_weights=cumulative, k=rng.randint(4, 16)))
        row = search_row(
            i + 1, f"$e{i}", room_ids[i % rooms], f"@u{i % 500}:bench", "m.room.message",
            {"body": text},
        )  # fmt: skip
        assert row is not None
        batch.append(row)
        if len(batch) == 10_000:
            async with db.transaction() as conn:
                await index_rows(conn, batch)
            batch.clear()
            if (i + 1) % 100_000 == 0:
                log(f"indexed {i + 1} messages ({time.perf_counter() - t0:.0f} s)")
    if batch:
        async with db.transaction() as conn:
            await index_rows(conn, batch)
    return vocab


async def query_latency(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            schema = f"searchbench_{uuid.uuid4().hex[:8]}"
            config = {"name": "psycopg2", "args": {"dsn": args.postgres, "schema": schema}}
        else:
            config = {"name": "sqlite3", "args": {"database": str(Path(tmp) / "bench.db")}}
        db = await open_database(config)
        try:
            t0 = time.perf_counter()
            vocab = await fill(db, args.messages, args.rooms, rng)
            fill_s = time.perf_counter() - t0
            store = SearchStore(db)
            my_rooms = [f"!room{i}:bench" for i in range(args.my_rooms)]
            terms = {
                "common word": vocab[0],
                "middling word": vocab[200],
                "rare word": vocab[15_000],
                "two words": f"{vocab[3]} {vocab[40]}",
                "prefix": vocab[100][:3],
                "chinese": "天气",
            }
            out: dict[str, Any] = {"fill_s": round(fill_s, 1)}
            for label, term in terms.items():
                query = parse_query(term)
                fts5, tsq = to_fts5(query), to_tsquery(query)
                for order in ("recent", "rank"):
                    times, count_times = [], []
                    hits = 0
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        found = await store.search(
                            fts5, tsq, my_rooms, ["content.body"], order=order, before=None,
                            limit=30 if order == "recent" else 500,
                        )  # fmt: skip
                        times.append((time.perf_counter() - t) * 1000)
                        if order == "recent":
                            t = time.perf_counter()
                            hits = await store.count(fts5, tsq, my_rooms, ["content.body"])
                            count_times.append((time.perf_counter() - t) * 1000)
                    out[f"{label} ({order})"] = {
                        "median_ms": round(statistics.median(times), 2),
                        "p95_ms": round(sorted(times)[int(len(times) * 0.95) - 1], 2),
                        "results": len(found),
                        **(
                            {
                                "count": hits,
                                "count_median_ms": round(statistics.median(count_times), 2),
                            }
                            if order == "recent"
                            else {}
                        ),
                    }
                    log(f"{label} ({order}): {out[f'{label} ({order})']}")
            return out
        finally:
            if args.postgres:
                await db.execute(f"DROP SCHEMA {schema} CASCADE")
            await db.close()


async def send_rate(sends: int, indexed: bool) -> float:
    import aiohttp
    from aiohttp import web

    import homeserver.storage.events as events_module
    from homeserver.app import create_app
    from tests.conftest import make_config

    original = events_module.index_rows

    async def no_index(conn: Any, rows: Any) -> None:
        return None

    events_module.index_rows = original if indexed else no_index  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(make_config(Path(tmp), log_level="WARNING"))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            base = f"http://127.0.0.1:{port}/_matrix/client/v3"
            try:
                async with aiohttp.ClientSession() as http:
                    body: dict[str, Any] = {"username": "bench", "password": "pw-bench-123"}
                    async with http.post(f"{base}/register", json=body) as r:
                        session = (await r.json())["session"]
                    body["auth"] = {"type": "m.login.dummy", "session": session}
                    async with http.post(f"{base}/register", json=body) as r:
                        token = (await r.json())["access_token"]
                    h = {"Authorization": f"Bearer {token}"}
                    async with http.post(f"{base}/createRoom", json={}, headers=h) as r:
                        room = (await r.json())["room_id"]
                    remaining = sends
                    words = [
                        "the",
                        "quick",
                        "brown",
                        "fox",
                        "jumps",
                        "over",
                        "the",
                        "lazy",
                        "dog",
                        "again",
                        "and",
                        "again",
                    ]

                    async def worker() -> None:
                        nonlocal remaining
                        while remaining > 0:
                            remaining -= 1
                            text = " ".join(random.sample(words, 8))
                            url = f"{base}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}"
                            async with http.put(
                                url, json={"msgtype": "m.text", "body": text}, headers=h
                            ) as r:
                                assert r.status == 200

                    t0 = time.perf_counter()
                    await asyncio.gather(*(worker() for _ in range(10)))
                    return sends / (time.perf_counter() - t0)
            finally:
                await runner.cleanup()
    finally:
        events_module.index_rows = original  # type: ignore[assignment]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--my-rooms", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--sends", type=int, default=3000)
    ap.add_argument("--postgres", default=None)
    ap.add_argument("--skip-sends", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {"backend": "postgres" if args.postgres else "sqlite"}
    out["queries"] = await query_latency(args)
    if not args.skip_sends:
        rates: dict[str, list[float]] = {"indexed": [], "not_indexed": []}
        for _ in range(3):
            for indexed in (False, True):
                rate = await send_rate(args.sends, indexed)
                rates["indexed" if indexed else "not_indexed"].append(rate)
                log(f"sends/s indexed={indexed}: {rate:.0f}")
        with_index = statistics.median(rates["indexed"])
        without = statistics.median(rates["not_indexed"])
        out["sends_per_s"] = {
            "indexed": round(with_index),
            "not_indexed": round(without),
            "cost_percent": round((1 - with_index / without) * 100, 1),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
