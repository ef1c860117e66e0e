#!/usr/bin/env python3
"""syncload.py - many long-polling /sync clients in one room: are any messages lost?

Drives any homeserver through the Client-Server API (aiohttp only), so the same run can be
made against Synapse and against ours:

  syncload.py --base-url URL [--clients 300] [--messages 10] [--interval 0.3] [--pid PID]

Setup: register `--clients` users (plus one sender), create a public room, join everyone.
Each client then does an initial `timeout=0` /sync with a room filter (timeline limit
`--timeline-limit`), and loops incremental /syncs with `timeout=--poll-timeout` from its own
`next_batch`. About `--warmup` seconds later the sender sends `--messages` messages
`--interval` seconds apart. `--settle` seconds after the last send, every client stops.

What is reported (one JSON object on stdout; progress on stderr):
- `missed`: (client, message) deliveries never seen through /sync, split into those
  the client was told about (a `limited` timeline: it can fill the gap with /messages) and
  silent ones (`missed_silent`): these are lost messages from the user's point of view
  and must be 0.
- `duplicates`: a message delivered twice to one client.
- send-return -> seen latency p50/p99/max over all deliveries, the longest send.
- with `--pid`: the server's CPU seconds for the measured phase, CPU per delivery, and
  its peak RSS (VmHWM), read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp


def log(msg: str) -> None:
    print(f"[syncload] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def proc_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    import os

    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


@dataclass
class Client:
    user_id: str
    token: str
    seen: dict[str, float] = field(default_factory=dict)  # body -> monotonic time seen
    # When its initial sync returned: messages whose send started later must arrive
    # through its incremental syncs.
    ready_at: float = float("inf")
    dupes: int = 0
    limited_batches: int = 0
    errors: int = 0


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base.rstrip("/") + "/_matrix/client/v3"
        self.session = session

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, **params: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for _attempt in range(20):
            async with self.session.request(
                method, self.base + path, json=body, headers=headers, params=params or None
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status == 429:
                    await asyncio.sleep(min(5.0, (data or {}).get("retry_after_ms", 500) / 1000))
                    continue
                if resp.status >= 400 and not (path == "/register" and resp.status == 401):
                    raise RuntimeError(f"{method} {path}: {resp.status} {data}")
                return data
        raise RuntimeError(f"{method} {path}: still rate limited")

    async def register(self, localpart: str) -> Client:
        body: dict[str, Any] = {"username": localpart, "password": "pw-" + localpart}
        first = await self.call("POST", "/register", body=body)
        if "access_token" not in first:
            body["auth"] = {"type": "m.login.dummy", "session": first.get("session")}
            first = await self.call("POST", "/register", body=body)
        return Client(first["user_id"], first["access_token"])


async def bounded(n: int, limit: int, fn: Any) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await fn(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.poll_timeout / 1000 + 120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        api = Api(args.base_url, session)
        prefix = args.prefix or secrets.token_hex(3)
        log(f"registering {args.clients + 1} users ({prefix})")
        sender = await api.register(f"sl{prefix}sender")
        clients = await bounded(args.clients, 8, lambda i: api.register(f"sl{prefix}u{i}"))
        room = await api.call(
            "POST", "/createRoom", sender.token, {"preset": "public_chat", "name": "load"}
        )
        room_id = room["room_id"]

        async def join(i: int) -> None:
            await api.call("POST", f"/join/{q(room_id)}", clients[i].token, {})

        if not args.join_while_polling:
            log(f"joining {len(clients)} users to {room_id}")
            await bounded(len(clients), 8, join)
        flt = json.dumps(
            {
                "room": {"rooms": [room_id], "timeline": {"limit": args.timeline_limit}},
                "presence": {"not_types": ["*"]} if args.no_presence else {},
            }
        )
        stop = asyncio.Event()
        bodies = [f"msg-{prefix}-{i}" for i in range(args.messages)]
        wanted = set(bodies)
        send_returned: dict[str, float] = {}
        send_started: dict[str, float] = {}

        def absorb(c: Client, data: dict[str, Any], initial: bool = False) -> None:
            joined = data.get("rooms", {}).get("join", {}).get(room_id)
            if not joined:
                return
            tl = joined.get("timeline", {})
            if tl.get("limited") and not initial:
                c.limited_batches += 1
            now = time.monotonic()
            for ev in tl.get("events", []):
                body = ev.get("content", {}).get("body")
                if body in wanted:
                    if body in c.seen:
                        c.dupes += 1
                    else:
                        c.seen[body] = now

        async def poller(c: Client) -> None:
            data = await api.call("GET", "/sync", c.token, filter=flt, timeout="0")
            absorb(c, data, initial=True)
            c.ready_at = time.monotonic()
            since = data["next_batch"]
            while not stop.is_set():
                try:
                    data = await api.call(
                        "GET",
                        "/sync",
                        c.token,
                        filter=flt,
                        timeout=str(args.poll_timeout),
                        since=since,
                    )
                except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
                    c.errors += 1
                    log(f"{c.user_id}: {exc!r}")
                    await asyncio.sleep(1)
                    continue
                absorb(c, data)
                since = data["next_batch"]

        log(f"starting {len(clients)} pollers")
        cpu0 = proc_cpu(args.pid)
        if args.join_while_polling:
            # Each user joins, then starts polling at once: joins, initial syncs,
            # long-polls and sends all overlap.
            sem = asyncio.Semaphore(8)

            async def gated(i: int) -> None:
                async with sem:
                    await join(i)
                await poller(clients[i])

            tasks = [asyncio.create_task(gated(i)) for i in range(len(clients))]
        else:
            tasks = [asyncio.create_task(poller(c)) for c in clients]
        await asyncio.sleep(args.warmup)
        send_times: list[float] = []
        for i, body in enumerate(bodies):
            t0 = send_started[body] = time.monotonic()
            await api.call(
                "PUT",
                f"/rooms/{q(room_id)}/send/m.room.message/{prefix}{i}",
                sender.token,
                {"msgtype": "m.text", "body": body},
            )
            send_returned[body] = time.monotonic()
            send_times.append(send_returned[body] - t0)
            log(f"sent {i} in {send_times[-1] * 1000:.0f} ms")
            await asyncio.sleep(args.interval)
        await asyncio.sleep(args.settle)
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=args.poll_timeout / 1000 + 30)
        for t in pending:
            t.cancel()
        cpu1 = proc_cpu(args.pid)

    latencies = [
        (c.seen[b] - send_returned[b]) * 1000 for c in clients for b in bodies if b in c.seen
    ]
    # A client owes a message only if its initial sync had returned before the send began.
    owed = [(c, b) for c in clients for b in bodies if c.ready_at < send_started[b]]
    missed = [(c, b) for c, b in owed if b not in c.seen]
    silent = [(c, b) for c, b in missed if c.limited_batches == 0]
    deliveries = len(owed)
    result: dict[str, Any] = {
        "label": args.label,
        "clients": len(clients),
        "messages": len(bodies),
        "deliveries": deliveries,
        "missed": len(missed),
        "missed_silent": len(silent),
        "clients_missing_any": len({c.user_id for c, _ in missed}),
        "missed_per_message": {b: sum(1 for _, x in missed if x == b) for b in bodies},
        "duplicates": sum(c.dupes for c in clients),
        "limited_batches": sum(c.limited_batches for c in clients),
        "client_errors": sum(c.errors for c in clients),
        "latency_ms": {
            "p50": pct(latencies, 50),
            "p99": pct(latencies, 99),
            "max": max(latencies) if latencies else None,
            "mean": statistics.fmean(latencies) if latencies else None,
        },
        "send_ms": {"max": max(send_times) * 1000, "p50": pct(send_times, 50) * 1000},
    }
    if cpu0 is not None and cpu1 is not None:
        result["server_cpu_s"] = round(cpu1 - cpu0, 2)
        result["cpu_ms_per_delivery"] = round((cpu1 - cpu0) * 1000 / max(1, len(latencies)), 3)
        result["peak_rss_mb"] = round((proc_hwm_kb(args.pid) or 0) / 1024, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--messages", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.3)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--settle", type=float, default=15.0)
    p.add_argument("--poll-timeout", type=int, default=10_000, help="ms")
    p.add_argument("--timeline-limit", type=int, default=50)
    p.add_argument(
        "--join-while-polling",
        action="store_true",
        help="each user starts polling as soon as its own join returns (joins overlap sends)",
    )
    p.add_argument("--no-presence", action="store_true", help="filter presence out")
    p.add_argument("--pid", type=int)
    p.add_argument("--prefix")
    p.add_argument("--label", default="")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
