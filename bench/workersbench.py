#!/usr/bin/env python3
"""workersbench.py - the single-process server against the worker deployment (issue 16).

  PYTHONPATH=. HS_TEST_POSTGRES_DSN=... python bench/workersbench.py \\
      [--send-users 20 --send-messages 100 --receivers 2000 --messages 30] [--only workers]

For each layout, on the same PostgreSQL and machine, in one run:
- `single`: the main alone (no Redis, no nginx);
- `workers`: main + 2 client readers + federation inbound + 2 federation senders, Redis
  and nginx (the main writes every room);
- `full`: the README's seven processes (tests/deployment.py FULL_LAYOUT): main + 2
  client readers + federation inbound + federation sender + 2 event persisters;
runs csbench's `send` (one room: throughput, latency) and `fanout` (one sender, N
long-polling receivers: send-return to seen, p50/p99) through the layout's public URL,
and `rooms` (ours: U users each sending M messages into a room of their own at once,
so writes spread over the persisters), and reports the CPU seconds every server
process (nginx and Redis included) used per event, and the sum of their peak RSS.
The clients run on the same two cores, so they compete with the servers: compare the
layouts, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deployment import FULL_LAYOUT, Deployment  # noqa: E402

# ../shared/bench/csbench.py beside the clone (or a worktree one level deeper).
CSBENCH = Path(
    os.environ.get("CSBENCH")
    or next(
        (
            str(up / "shared" / "bench" / "csbench.py")
            for up in REPO.parents
            if (up / "shared" / "bench" / "csbench.py").is_file()
        ),
        "csbench.py",
    )
)


def pids(d: Deployment) -> list[int]:
    out = [p.proc.pid for p in d.processes.values() if p.proc is not None]
    for extra in (d._redis, d._nginx):
        if extra is not None:
            out.append(extra.pid)
            out += children(extra.pid)  # nginx's worker processes
    return out


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_csbench(url: str, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, str(CSBENCH), "--base-url", url, scenario,
        "--send-users", str(args.send_users), "--send-messages", str(args.send_messages),
        "--fanout-receivers", str(args.receivers), "--fanout-messages", str(args.messages),
        "--fanout-wait-s", "30", "--sync-timeout-ms", "30000",
        "--register-concurrency", "20",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


async def rooms_scenario(url: str, users: int, messages: int) -> dict[str, Any]:
    """`users` users, each in a room of their own, all sending `messages` at once."""
    import aiohttp

    from tests.client.test_workers import Client, register

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        clients: list[Client] = [await register(session, url) for _ in range(users)]
        rooms = [
            (await c.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"] for c in clients
        ]
        latencies: list[float] = []

        async def sender(c: Client, room: str) -> None:
            for i in range(messages):
                started = time.perf_counter()
                path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/b{i}"
                await c.ok("PUT", path, {"msgtype": "m.text", "body": str(i)})
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(sender(c, r) for c, r in zip(clients, rooms, strict=True)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "events": users * messages,
        "events_per_s": round(users * messages / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
    }


def measure(layout: str, args: argparse.Namespace) -> dict[str, Any]:
    shapes: dict[str, dict[str, Any]] = {
        "single": {"workers": False},
        "workers": {"federation_senders": 2},
        "full": dict(FULL_LAYOUT),
    }
    d = Deployment(Path(tempfile.mkdtemp(prefix=f"wb-{layout}-")), **shapes[layout])
    d.start()
    try:
        result: dict[str, Any] = {"layout": layout, "processes": len(pids(d))}
        for scenario in ("send", "rooms", "fanout"):
            before = {p: cpu_s(p) for p in pids(d)}
            if scenario == "rooms":
                data = asyncio.run(rooms_scenario(d.url, args.send_users, args.send_messages))
            else:
                data = run_csbench(d.url, scenario, args)
            used = sum(cpu_s(p) - before.get(p, 0.0) for p in pids(d))
            events = args.send_users * args.send_messages
            if scenario == "fanout":
                events = args.messages
            data["server_cpu_s"] = round(used, 2)
            data["server_cpu_ms_per_event"] = round(1000 * used / events, 2)
            result[scenario] = data
        result["peak_rss_mb_sum"] = round(sum(hwm_mb(p) for p in pids(d)), 1)
        return result
    finally:
        d.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--send-users", type=int, default=20)
    p.add_argument("--send-messages", type=int, default=100)
    p.add_argument("--receivers", type=int, default=2000)
    p.add_argument("--messages", type=int, default=30)
    p.add_argument("--only", choices=["single", "workers", "full"])
    args = p.parse_args()
    for layout in [args.only] if args.only else ["single", "workers", "full"]:
        print(json.dumps(measure(layout, args)), flush=True)


if __name__ == "__main__":
    main()
