#!/usr/bin/env python3
"""pushbench.py - push-gateway delivery (issue 15).

  pushbench.py --base-url URL --pid PID [--members 1000] [--messages 20] [--senders 20]

One room with `--members` users, each with an HTTP pusher to a gateway this script runs
(on loopback: start the server with ip_range_whitelist [127.0.0.0/8]):
- `deliver`: `--messages` messages, sent one after another, each notifying every other
  member: notifications per second reaching the gateway (until all arrived), and the
  server's CPU per notification;
- `send cost`: a group chat of `--senders` members (all with pushers) where each sends
  50 messages concurrently, once with the pushers in place and once after deleting them
  all: events/s both ways (what delivery takes from the send path) and the server's CPU
  per event including the delivery of its notifications.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[pushbench] {msg}", file=sys.stderr, flush=True)


class Gateway:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    async def notify(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        self.last = time.perf_counter()
        return web.json_response({"rejected": []})


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--senders", type=int, default=20)
    a = p.parse_args()
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", gw.notify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    gw_url = f"http://127.0.0.1:{port}/_matrix/push/v1/notify"
    base = a.base_url.rstrip("/") + "/_matrix/client/v3"
    run = secrets.token_hex(3)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def call(method: str, path: str, token: str | None, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for _ in range(50):
                async with s.request(method, base + path, json=body, headers=headers) as r:
                    data = await r.json(content_type=None)
                    if r.status == 429:
                        await asyncio.sleep(data.get("retry_after_ms", 100) / 1000)
                        continue
                    assert r.status == 200, (path, r.status, data)
                    return data
            raise RuntimeError("rate limited")

        async def register(i: int) -> str:
            body = {"username": f"pb{run}_{i}", "password": "pw", "auth": {"type": "m.login.dummy"}}
            return (await call("POST", "/register", None, body))["access_token"]

        sem = asyncio.Semaphore(16)

        async def limited(coro: Any) -> Any:
            async with sem:
                return await coro

        log(f"registering {a.members} users")
        tokens = await asyncio.gather(*(limited(register(i)) for i in range(a.members)))
        room = (await call("POST", "/createRoom", tokens[0], {"preset": "public_chat"}))["room_id"]
        await asyncio.gather(*(limited(call("POST", f"/join/{room}", t, {})) for t in tokens[1:]))

        async def set_pusher(i: int, token: str, kind: str | None) -> None:
            body: dict[str, Any] = {
                "kind": kind,
                "app_id": "org.example.bench",
                "pushkey": f"key{i}",
                "app_display_name": "Bench",
                "device_display_name": "Phone",
                "lang": "en",
                "data": {"url": gw_url},
            }
            await call("POST", "/pushers/set", token, body)

        log("setting pushers")
        await asyncio.gather(*(limited(set_pusher(i, t, "http")) for i, t in enumerate(tokens)))
        expected = a.messages * (a.members - 1)
        c0, t0 = cpu_s(a.pid), time.perf_counter()
        for k in range(a.messages):
            await call(
                "PUT",
                f"/rooms/{room}/send/m.room.message/d{k}",
                tokens[0],
                {"msgtype": "m.text", "body": f"note {k}"},
            )
        deadline = time.monotonic() + 300
        while gw.count < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        wall = gw.last - t0
        used = cpu_s(a.pid) - c0
        deliver = {
            "pushers": a.members,
            "messages": a.messages,
            "notifications": gw.count,
            "expected": expected,
            "per_s": round(gw.count / wall, 1),
            "server_cpu_ms_per_notification": round(1000 * used / max(gw.count, 1), 3),
        }
        log(json.dumps(deliver))

        # A group chat of `--senders` members (all with pushers): each message is a
        # notification to every other member.
        chat = (await call("POST", "/createRoom", tokens[1], {"preset": "public_chat"}))["room_id"]
        await asyncio.gather(
            *(call("POST", f"/join/{chat}", t, {}) for t in tokens[2 : 1 + a.senders])
        )

        async def send_round(label: str) -> tuple[float, float]:
            async def sender(i: int) -> None:
                for n in range(50):
                    await call(
                        "PUT",
                        f"/rooms/{chat}/send/m.room.message/{label}{i}_{n}",
                        tokens[1 + i],
                        {"msgtype": "m.text", "body": f"{label} {n}"},
                    )

            before = gw.count
            c, t = cpu_s(a.pid), time.perf_counter()
            await asyncio.gather(*(sender(i) for i in range(a.senders)))
            wall = time.perf_counter() - t
            expected = before + a.senders * 50 * (a.senders - 1) if label == "w" else before
            deadline = time.monotonic() + 120
            while gw.count < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return a.senders * 50 / wall, 1000 * (cpu_s(a.pid) - c) / (a.senders * 50)

        await asyncio.sleep(2)
        with_pushers, cpu_with = await send_round("w")
        await asyncio.gather(*(limited(set_pusher(i, t, None)) for i, t in enumerate(tokens)))
        without, cpu_without = await send_round("o")
        print(
            json.dumps(
                {
                    "deliver": deliver,
                    "chat_members": a.senders,
                    "send_events_per_s_with_pushers": round(with_pushers, 1),
                    "send_events_per_s_without": round(without, 1),
                    "send_cost": round(1 - with_pushers / without, 3),
                    "cpu_ms_per_event_with_delivery": round(cpu_with, 2),
                    "cpu_ms_per_event_without": round(cpu_without, 2),
                }
            )
        )
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
