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
so writes spread over the persisters), and `reading` (ours: the same users each sending and marking each message read
with `/read_markers`, as Element does, while PostgreSQL's advisory locks waiting
are sampled: `--reader-writers` has the client readers write those streams),
and `federation` (ours: a signed fake peer sends transactions of 40 messages over 8
rooms, one after another, through the public URL: PDUs/s and transaction latency),
and `markers` (ours: the users in one room, each marking its messages read with
`/read_markers` one after another, all at once: markers per second; "events" in
the CPU figures are markers), and `follow` (ours: messages sent at a steady 40 events/s to the main's own listener,
nobody syncing: what each process spends following the deployment's streams, as a share of one core, against
Synapse's published figure of about 25% of a worker's CPU at that rate), and reports
the CPU seconds every server process (nginx and Redis included) used per event, the
main's share of them, each process's (`cpu_ms_per_event_by_process`: where a
layout's extra cost goes), the share spent in the kernel, and the sum of their peak
RSS. PostgreSQL's own CPU is not counted (in either layout).
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


def named_pids(d: Deployment) -> dict[str, list[int]]:
    """Each server process by role name (nginx: its master and workers; Redis)."""
    out = {name: [p.proc.pid] for name, p in d.processes.items() if p.proc is not None}
    for name, extra in (("redis", d._redis), ("nginx", d._nginx)):
        if extra is not None:
            out[name] = [extra.pid, *children(extra.pid)]
    return out


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def cpu_s(pid: int, *, kernel_only: bool = False) -> float:
    """CPU seconds `pid` has used (user and kernel, or kernel only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[12]) if kernel_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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


async def users_in_own_rooms(session: Any, url: str, users: int) -> tuple[list[Any], list[str]]:
    """`users` new users, each with a room of their own."""
    from tests.client.test_workers import register

    clients = [await register(session, url) for _ in range(users)]
    rooms = [(await c.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"] for c in clients]
    return clients, rooms


async def rooms_scenario(url: str, users: int, messages: int) -> dict[str, Any]:
    """`users` users, each in a room of their own, all sending `messages` at once."""
    import aiohttp

    from tests.client.test_workers import Client

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        clients, rooms = await users_in_own_rooms(session, url, users)
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


async def reading_scenario(url: str, dsn: str, users: int, messages: int) -> dict[str, Any]:
    """`users` users, each in a room of their own, each sending `messages` and marking
    each read as Element does (`/read_markers`: the m.fully_read account data and an
    m.read receipt), all at once; meanwhile PostgreSQL's pg_locks is sampled every 2 ms
    for advisory locks not yet granted (writes waiting for a deployment-wide or a
    stream's turn, or a room's lock)."""
    import aiohttp
    import asyncpg

    from tests.client.test_workers import Client

    waiting: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not done.is_set():
                waiting.append(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                )
                await asyncio.sleep(0.002)
        finally:
            await conn.close()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        clients, rooms = await users_in_own_rooms(session, url, users)
        latencies: list[float] = []

        async def reader(c: Client, room: str) -> None:
            for i in range(messages):
                started = time.perf_counter()
                path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/r{i}"
                sent = await c.ok("PUT", path, {"msgtype": "m.text", "body": str(i)})
                markers = {"m.fully_read": sent["event_id"], "m.read": sent["event_id"]}
                await c.ok("POST", f"/_matrix/client/v3/rooms/{room}/read_markers", markers)
                latencies.append(time.perf_counter() - started)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        await asyncio.gather(*(reader(c, r) for c, r in zip(clients, rooms, strict=True)))
        elapsed = time.perf_counter() - started
        done.set()
        await sampler
    latencies.sort()
    return {
        "events": users * messages,
        "messages_read_per_s": round(users * messages / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "advisory_locks_waiting_avg": round(sum(waiting) / max(len(waiting), 1), 4),
        "samples": len(waiting),
    }


async def markers_scenario(
    url: str, dsn: str, server_pids: list[int], users: int, markers: int
) -> dict[str, Any]:
    """`users` users in one room, each marking its `markers` messages read one after
    another (`/read_markers`: an m.fully_read and an m.read receipt, as Element does
    while its user reads), all users at once: read markers per second, latency, and
    over the marking alone (not the users' registration) the server processes' CPU
    and PostgreSQL's committed transactions (pg_stat_database) per marker."""
    import aiohttp
    import asyncpg

    async def commits() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
            )
        finally:
            await conn.close()

    from tests.client.test_workers import Client, register

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        clients = [await register(session, url) for _ in range(users)]
        room = (
            await clients[0].ok("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        )["room_id"]
        for c in clients[1:]:
            await c.ok("POST", f"/_matrix/client/v3/join/{room}", {})
        events = []
        for i in range(markers):
            path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/m{i}"
            events.append(
                (await clients[0].ok("PUT", path, {"msgtype": "m.text", "body": str(i)}))[
                    "event_id"
                ]
            )
        latencies: list[float] = []

        async def reader(c: Client) -> None:
            for event_id in events:
                started = time.perf_counter()
                body = {"m.fully_read": event_id, "m.read": event_id}
                await c.ok("POST", f"/_matrix/client/v3/rooms/{room}/read_markers", body)
                latencies.append(time.perf_counter() - started)

        await asyncio.sleep(3)  # PostgreSQL's statistics are sent at most every 1 s
        cpu_before, commits_before = sum(cpu_s(p) for p in server_pids), await commits()
        started = time.perf_counter()
        await asyncio.gather(*(reader(c) for c in clients))
        elapsed = time.perf_counter() - started
        cpu = sum(cpu_s(p) for p in server_pids) - cpu_before
        await asyncio.sleep(3)
        committed = await commits() - commits_before
    latencies.sort()
    return {
        "markers": users * markers,
        "marking_cpu_ms_per_marker": round(1000 * cpu / (users * markers), 2),
        "pg_commits_per_marker": round(committed / (users * markers), 2),
        "markers_per_s": round(users * markers / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
    }


async def follow_scenario(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Four users, a room each, sending `rate` messages per second in all for `seconds`
    (each send its own task, so a slow answer does not lower the rate)."""
    import aiohttp

    from tests.client.test_workers import Client, register

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        clients: list[Client] = [await register(session, url) for _ in range(4)]
        rooms = [
            (await c.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"] for c in clients
        ]
        await asyncio.sleep(2)  # the room creations' own replication settles
        count = int(rate * seconds)
        started = time.perf_counter()
        sends: list[asyncio.Task[Any]] = []
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            c, room = clients[i % 4], rooms[i % 4]
            path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/f{i}"
            sends.append(asyncio.create_task(c.ok("PUT", path, {"msgtype": "m.text", "body": "x"})))
        await asyncio.gather(*sends)
        elapsed = time.perf_counter() - started
    return {"events": count, "events_per_s": round(count / elapsed, 1), "elapsed_s": elapsed}


async def federation_scenario(url: str, deployment: Deployment, rooms: int, txns: int) -> Any:
    """A peer's federation traffic: `rooms` rooms of ours with a user of the peer (a
    signed fake peer, remote.test), then `txns` transactions sent one after another
    (as a sending server does per destination), each with 5 messages in every room
    (50 PDUs at most per transaction). Returns the numbers and the count of PDUs."""
    import aiohttp

    from homeserver.appstate import STORES
    from homeserver.events import get_room_version
    from homeserver.events.builder import build_event
    from homeserver.graph.auth_rules import auth_types_for_event
    from tests.deployment_view import DeploymentView
    from tests.federation import inbound_helpers as peer

    per_room = 5
    view = DeploymentView(deployment, None)
    await view.open()
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, timeout=timeout) as session:
        client: Any = type("Peer", (), {"app": view, "request": session.request})()
        await peer.seed_remote_key(client)
        ids = [await peer.create_room(client) for _ in range(rooms)]
        for room_id in ids:
            await peer.join_remote(client, room_id)
        stores = view[STORES]
        chains: list[list[dict[str, Any]]] = []
        for room_id in ids:  # each room's messages, built and signed ahead
            version = get_room_version(await stores.rooms.get_room_version(room_id))
            state = await stores.current_state.get_current_state_ids(room_id)
            content = {"msgtype": "m.text", "body": "x"}
            keys = auth_types_for_event(version, "m.room.message", peer.RITA, None, content)
            auth = [state[k] for k in sorted(keys) if k in state]
            prev = await stores.events.get_forward_extremities(room_id)
            depth = max(e.depth for e in (await stores.events.get_events(prev)).values()) + 1
            chain = []
            for i in range(txns * per_room):
                event = build_event(
                    version, room_id=room_id, sender=peer.RITA, type="m.room.message",
                    content={**content, "body": str(i)}, state_key=None, prev_event_ids=prev,
                    auth_event_ids=auth, depth=depth + i,
                    origin_server_ts=int(time.time() * 1000) + i,
                    server_name=peer.REMOTE, signing_key=peer.REMOTE_KEY,
                )  # fmt: skip
                chain.append(event.pdu)
                prev = [event.event_id]
            chains.append(chain)
        latencies: list[float] = []
        started = time.perf_counter()
        for t in range(txns):
            pdus = [pdu for chain in chains for pdu in chain[t * per_room : (t + 1) * per_room]]
            body = {"origin": peer.REMOTE, "origin_server_ts": 1, "pdus": pdus, "edus": []}
            sent = time.perf_counter()
            status, answer = await peer.fed(
                client, "PUT", f"/_matrix/federation/v1/send/b{t}", body
            )
            latencies.append(time.perf_counter() - sent)
            failed = [r for r in answer.get("pdus", {}).values() if r] if status == 200 else [0]
            assert not failed, (status, answer)
        elapsed = time.perf_counter() - started
    await view.close()
    latencies.sort()
    count = txns * rooms * per_room
    return {
        "pdus": count,
        "pdus_per_s": round(count / elapsed, 1),
        "txn_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "txn_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
    }, count


def measure(layout: str, args: argparse.Namespace) -> dict[str, Any]:
    shapes: dict[str, dict[str, Any]] = {
        "single": {"workers": False},
        "workers": {"federation_senders": 2},
        "full": dict(FULL_LAYOUT),
    }
    # test.local: the fake peer's requests name it (tests/federation/inbound_helpers.py).
    workdir = Path(tempfile.mkdtemp(prefix=f"wb-{layout}-"))
    overrides: dict[str, Any] = {}
    if args.reader_writers and layout != "single":
        from tests.deployment_mode import READER_WRITERS

        overrides["stream_writers"] = READER_WRITERS  # the readers write the streams
    d = Deployment(workdir, server_name="test.local", overrides=overrides, **shapes[layout])
    d.start()
    try:
        result: dict[str, Any] = {"layout": layout, "processes": len(pids(d))}
        for scenario in args.scenarios.split(","):
            before = {p: cpu_s(p) for p in pids(d)}
            kernel_before = {p: cpu_s(p, kernel_only=True) for p in pids(d)}
            main_before = cpu_s(d.processes["main"].proc.pid)  # type: ignore[union-attr]
            if scenario == "federation":
                data, events = asyncio.run(
                    federation_scenario(d.url, d, args.fed_rooms, args.fed_txns)
                )
            elif scenario == "rooms":
                data = asyncio.run(rooms_scenario(d.url, args.send_users, args.send_messages))
            elif scenario == "reading":
                data = asyncio.run(
                    reading_scenario(d.url, d.dsn, args.send_users, args.send_messages)
                )
            elif scenario == "markers":
                data = asyncio.run(
                    markers_scenario(d.url, d.dsn, pids(d), args.send_users, args.send_messages)
                )
            elif scenario == "follow":
                # Straight to the main's public listener (it hands each room write to
                # the room's persister): the client readers and the other workers do
                # nothing but follow.
                main_url = f"http://127.0.0.1:{d.processes['main'].port}"
                data = asyncio.run(follow_scenario(main_url, args.follow_rate, args.follow_s))
                events = data["events"]
                data["cpu_pct_of_a_core"] = {
                    name: round(
                        100 * sum(cpu_s(p) - before.get(p, 0.0) for p in ps) / data["elapsed_s"],
                        1,
                    )
                    for name, ps in named_pids(d).items()
                }
            else:
                data = run_csbench(d.url, scenario, args)
            used = sum(cpu_s(p) - before.get(p, 0.0) for p in pids(d))
            main_used = cpu_s(d.processes["main"].proc.pid) - main_before  # type: ignore[union-attr]
            if scenario in ("send", "rooms", "reading", "markers"):
                events = args.send_users * args.send_messages
            elif scenario == "fanout":
                events = args.messages
            data["server_cpu_s"] = round(used, 2)
            data["server_cpu_ms_per_event"] = round(1000 * used / events, 2)
            data["main_cpu_ms_per_event"] = round(1000 * main_used / events, 2)
            data["cpu_ms_per_event_by_process"] = {
                name: round(1000 * sum(cpu_s(p) - before.get(p, 0.0) for p in ps) / events, 2)
                for name, ps in named_pids(d).items()
            }
            kernel = sum(cpu_s(p, kernel_only=True) - kernel_before.get(p, 0.0) for p in pids(d))
            data["kernel_share_of_server_cpu"] = round(kernel / used, 2) if used else 0.0
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
    p.add_argument("--scenarios", default="send,rooms,fanout,federation")
    p.add_argument("--fed-rooms", type=int, default=8)  # 40 PDUs per transaction
    p.add_argument("--fed-txns", type=int, default=50)
    p.add_argument("--follow-rate", type=float, default=40.0)
    p.add_argument("--follow-s", type=float, default=60.0)
    p.add_argument(
        "--reader-writers", action="store_true", help="the client readers write the streams"
    )
    args = p.parse_args()
    for layout in [args.only] if args.only else ["single", "workers", "full"]:
        print(json.dumps(measure(layout, args)), flush=True)


if __name__ == "__main__":
    main()
