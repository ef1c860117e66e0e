#!/usr/bin/env python3
"""slidingbench.py - simplified sliding sync (MSC4186) for a user in many rooms.

  slidingbench.py --base-url URL --pid PID [--rooms 2000] [--rounds 5] [--label L]

Registers a user, creates `--rooms` rooms (named, one message each), then per round:
- `initial`: a new connection asking what Element X asks first: one list, range 0-19,
  timeline_limit 1, the rust SDK's required_state; time and response bytes;
- `incremental`: one new message in the room that was least recently active (so it
  jumps to the top of the list), then the same request with the position: time until
  the answer (which must carry that room) and bytes.
Medians over the rounds, the server's CPU per request, and its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from typing import Any

import aiohttp

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
REQUIRED_STATE = [
    ["m.room.name", ""],
    ["m.room.encryption", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
    ["m.room.topic", ""],
    ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""],
    ["m.room.power_levels", ""],
    ["m.room.join_rules", ""],
    ["m.room.tombstone", ""],
    ["m.room.create", ""],
    ["m.room.history_visibility", ""],
    ["m.space.parent", "*"],
    ["m.space.child", "*"],
    ["org.matrix.msc3401.call.member", "*"],
]


def log(msg: str) -> None:
    print(f"[slidingbench] {msg}", file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--rooms", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    c = base + "/_matrix/client/v3"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        body: dict[str, Any] = {"username": "sb" + secrets.token_hex(4), "password": "pw-sb-123"}
        async with http.post(f"{c}/register", json=body) as r:
            first = await r.json()
        body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
        async with http.post(f"{c}/register", json=body) as r:
            token = (await r.json())["access_token"]
        h = {"Authorization": f"Bearer {token}"}

        rooms: list[str] = []
        t0 = time.perf_counter()

        async def make(i: int) -> None:
            async with http.post(
                f"{c}/createRoom", json={"name": f"Room {i}", "preset": "private_chat"}, headers=h
            ) as r:
                data = await r.json()
                assert r.status == 200, data
                room = data["room_id"]
            url = f"{c}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}"
            async with http.put(url, json={"msgtype": "m.text", "body": f"hi {i}"}, headers=h):
                pass
            rooms.append(room)

        sem = asyncio.Semaphore(4)

        async def limited(i: int) -> None:
            async with sem:
                await make(i)
                if len(rooms) % 250 == 0:
                    log(f"{len(rooms)} rooms ({time.perf_counter() - t0:.0f} s)")

        await asyncio.gather(*(limited(i) for i in range(args.rooms)))
        log(f"{args.rooms} rooms in {time.perf_counter() - t0:.0f} s")

        request = {
            "lists": {
                "all_rooms": {
                    "ranges": [[0, 19]],
                    "timeline_limit": 1,
                    "required_state": REQUIRED_STATE,
                }
            }
        }

        async def sliding(conn: str, pos: str | None) -> tuple[float, int, dict[str, Any], float]:
            params = {"timeout": "0"}
            if pos:
                params["pos"] = pos
            cpu0 = cpu_s(args.pid)
            t = time.perf_counter()
            async with http.post(
                base + PATH, json={**request, "conn_id": conn}, params=params, headers=h
            ) as r:
                raw = await r.read()
                assert r.status == 200, raw[:300]
            took = time.perf_counter() - t
            return took, len(raw), json.loads(raw), cpu_s(args.pid) - cpu0

        initial, initial_bytes, incr, incr_bytes, cpu_i, cpu_n = [], [], [], [], [], []
        oldest = list(rooms)  # least recently active first
        for rnd in range(args.rounds):
            took, size, data, cpu = await sliding(f"bench{rnd}", None)
            assert data["lists"]["all_rooms"]["count"] == args.rooms, data["lists"]
            assert len(data["rooms"]) == 20
            initial.append(took)
            initial_bytes.append(size)
            cpu_i.append(cpu)
            target = oldest.pop(0)
            url = f"{c}/rooms/{target}/send/m.room.message/{uuid.uuid4().hex}"
            async with http.put(url, json={"msgtype": "m.text", "body": "bump"}, headers=h) as r:
                assert r.status == 200
            took, size, data2, cpu = await sliding(f"bench{rnd}", data["pos"])
            assert target in data2["rooms"], list(data2["rooms"])
            incr.append(took)
            incr_bytes.append(size)
            cpu_n.append(cpu)
            log(
                f"round {rnd}: initial {initial[-1] * 1000:.0f} ms, incremental {took * 1000:.0f} ms"
            )
        out = {
            "label": args.label,
            "rooms": args.rooms,
            "initial_median_ms": round(statistics.median(initial) * 1000, 1),
            "initial_bytes": int(statistics.median(initial_bytes)),
            "initial_cpu_ms": round(statistics.median(cpu_i) * 1000, 1),
            "incremental_median_ms": round(statistics.median(incr) * 1000, 1),
            "incremental_bytes": int(statistics.median(incr_bytes)),
            "incremental_cpu_ms": round(statistics.median(cpu_n) * 1000, 1),
            "peak_rss_mb": round(hwm_mb(args.pid), 1),
        }
        print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
