#!/usr/bin/env python3
"""slidingfanout.py - one message to many Element X clients (simplified sliding sync).

  slidingfanout.py --base-url URL [--clients 300] [--rounds 3]

Registers `--clients` users in one room, each with a sliding sync connection
long-polling (one list, timeline_limit 1, as Element X's first request), then per
round: a message is sent, and right after its answer a second one (as the sender
types on). Reports, medians over the rounds: how long the second send took (it
shares the server's write connection with whatever the fan-out left to write: each
answered connection stores its new position), and when each client's answer carrying
the first message (or the second, which a timeline of one hides it behind) arrived
after the first send returned (p50/p99 over all clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import aiohttp

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
LISTS = {"all": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]}}


async def register(session: aiohttp.ClientSession, base: str, name: str) -> str:
    body: dict[str, Any] = {"username": name, "password": "pw-" + name}
    async with session.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
        data = await resp.json()
    if "access_token" not in data:  # user-interactive auth: the dummy stage
        body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
        async with session.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
            data = await resp.json()
    return str(data["access_token"])


async def call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, json=body, headers=headers) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        return await resp.json()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = args.base_url
    run = uuid.uuid4().hex[:6]
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sem = asyncio.Semaphore(10)

        async def reg(i: int) -> str:
            async with sem:
                return await register(session, base, f"sf{run}u{i}")

        sender = await reg(-1)
        tokens = await asyncio.gather(*(reg(i) for i in range(args.clients)))
        v3 = f"{base}/_matrix/client/v3"
        room = (await call(session, "POST", f"{v3}/createRoom", sender, {"preset": "public_chat"}))[
            "room_id"
        ]
        for t in tokens:
            await call(session, "POST", f"{v3}/join/{room}", t, {})
        positions = {}
        for t in tokens:
            positions[t] = (await call(session, "POST", f"{base}{PATH}", t, {"lists": LISTS}))[
                "pos"
            ]
        second_sends: list[float] = []
        seen_after: list[float] = []
        for r in range(args.rounds):
            marker = f"fanout {run} {r}"
            arrived: dict[str, float] = {}

            async def poll(t: str, marker: str, arrived: dict[str, float]) -> None:
                while True:
                    url = f"{base}{PATH}?pos={positions[t]}&timeout=30000"
                    data = await call(session, "POST", url, t, {"lists": LISTS})
                    positions[t] = data["pos"]
                    for room_data in data.get("rooms", {}).values():
                        for event in room_data.get("timeline", []):
                            # timeline_limit 1: the second message may hide the first
                            if event.get("content", {}).get("body") in (marker, f"{marker} more"):
                                arrived[t] = time.perf_counter()
                                return

            polls = [asyncio.create_task(poll(t, marker, arrived)) for t in tokens]
            await asyncio.sleep(3)  # every long-poll is waiting
            path = f"{v3}/rooms/{room}/send/m.room.message"
            await call(
                session, "PUT", f"{path}/a{r}", sender, {"msgtype": "m.text", "body": marker}
            )
            sent = time.perf_counter()
            await call(
                session,
                "PUT",
                f"{path}/b{r}",
                sender,
                {"msgtype": "m.text", "body": f"{marker} more"},
            )
            second_sends.append(1000 * (time.perf_counter() - sent))
            await asyncio.wait_for(asyncio.gather(*polls), 120)
            seen_after.extend(1000 * (arrived[t] - sent) for t in tokens)
            await asyncio.sleep(3)  # the positions are written
    seen_after.sort()
    return {
        "clients": args.clients,
        "rounds": args.rounds,
        "second_send_ms_median": round(statistics.median(second_sends), 1),
        "second_send_ms": [round(x, 1) for x in second_sends],
        "seen_p50_ms": round(seen_after[len(seen_after) // 2], 1),
        "seen_p99_ms": round(seen_after[int(len(seen_after) * 0.99)], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
