#!/usr/bin/env python3
"""fedbench.py - federation latency and ingest throughput between two homeservers.

Drives any two federating homeservers through the Client-Server API only (aiohttp), so the
same numbers can be taken for Synapse<->Synapse and for our server in either seat:

  fedbench.py --hs1-url URL --hs1-name NAME --hs2-url URL --hs2-name NAME [options]

Setup: register one user on each server, create a room on hs1 (``--room-version``, default
12), join it from hs2 by room ID with ``server_name``/``via``, and a few unmeasured warm-up
messages each way (connections, key caches, JIT-ish first-use costs out of the numbers).

Measurements, one JSON line each on stdout (progress on stderr):
  latency  ``--messages`` sequential messages per direction; each is sent, then the next one
           only after the previous was seen. Latency = time from the sender's PUT /send
           returning to the event appearing in the receiver's long-polling /sync (also
           reported from the PUT's start). p50/p90/p99/max in ms.
  ingest   ``--burst`` messages sent as fast as possible with ``--concurrency`` PUTs in
           flight; ingest time = first PUT start to the last event seen in the receiver's
           /sync; events/s = burst / that time. Also the sender-side send rate and the tail
           (last PUT returned -> last event seen on the other side).
Both run hs1->hs2 and then hs2->hs1. ``--pid1``/``--pid2`` add each server's CPU seconds
(from /proc) per measurement: on a small noisy machine CPU per event is the steadier figure.

A /sync response whose timeline is ``limited`` is completed by paginating /messages back to
the previous batch; if a burst stalls for ``--stall`` seconds (a receiver that accepted events
with a gap never puts the skipped ones in /sync), /messages is swept from the end as a
scrolling client would. ``sync_gaps_filled`` / ``seen_only_via_messages`` report that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp


class BenchError(Exception):
    """A request or wait failed: the run stops with this message."""


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def pct(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cpu_seconds(pid: int | None) -> float | None:
    """utime+stime of a process (and its reaped children) in seconds, or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Client:
    """One logged-in user on one server."""

    def __init__(self, session: aiohttp.ClientSession, base: str, label: str, timeout: float):
        self.s, self.base, self.label, self.timeout = session, base.rstrip("/"), label, timeout
        self.token: str | None = None
        self.user_id: str | None = None
        self._txn = 0
        self._txn_prefix = f"fb{os.getpid()}-{secrets.token_hex(3)}"

    async def req(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        ct = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with self.s.request(
                method, self.base + path, json=body, params=params, headers=headers, timeout=ct
            ) as r:
                text = await r.text()
                if r.status not in expect:
                    raise BenchError(f"{self.label}: {method} {path} -> {r.status}: {text[:300]}")
                return json.loads(text) if text else {}
        except (TimeoutError, aiohttp.ClientError) as e:
            raise BenchError(f"{self.label}: {method} {path}: {type(e).__name__}: {e}") from e

    async def register(self, localpart: str) -> None:
        body: dict[str, Any] = {
            "username": localpart,
            "password": secrets.token_urlsafe(12),
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": "fedbench",
        }
        data = await self.req("POST", "/_matrix/client/v3/register", body, expect=(200, 401))
        if "access_token" not in data:  # the server wants a UIA session first
            body["auth"] = {"type": "m.login.dummy", "session": data.get("session")}
            data = await self.req("POST", "/_matrix/client/v3/register", body)
        self.token, self.user_id = data["access_token"], data["user_id"]

    async def send_text(self, room_id: str, text: str) -> str:
        self._txn += 1
        path = (
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/"
            f"{self._txn_prefix}-{self._txn}"
        )
        data = await self.req("PUT", path, {"msgtype": "m.text", "body": text})
        return data["event_id"]


@dataclass
class SyncWatcher:
    """Long-polls /sync for one room and records when each event was first seen."""

    c: Client
    room_id: str | None = None
    timeline_limit: int = 200
    since: str | None = None
    seen_at: dict[str, float] = field(default_factory=dict)  # event_id -> monotonic time
    bodies_at: dict[str, float] = field(default_factory=dict)  # message body -> time
    joined: set[str] = field(default_factory=set)
    members: dict[str, str] = field(default_factory=dict)  # user_id -> membership
    gaps_filled: int = 0
    error: BaseException | None = None
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task | None = None

    def _filter(self) -> str:
        room: dict[str, Any] = {
            "timeline": {"limit": self.timeline_limit},
            "state": {"lazy_load_members": True},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        }
        if self.room_id:
            room["rooms"] = [self.room_id]
        return json.dumps(
            {
                "room": room,
                "presence": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
            separators=(",", ":"),
        )

    async def initial(self) -> None:
        data = await self.c.req("GET", "/_matrix/client/v3/sync", params={"timeout": "0"})
        self.since = data["next_batch"]

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def _record(self, ev: dict[str, Any], now: float) -> None:
        eid = ev.get("event_id")
        if not eid or eid in self.seen_at:
            return
        self.seen_at[eid] = now
        if ev.get("type") == "m.room.message":
            body = ev.get("content", {}).get("body")
            if isinstance(body, str):
                self.bodies_at.setdefault(body, now)
        elif ev.get("type") == "m.room.member" and ev.get("state_key"):
            self.members[ev["state_key"]] = ev.get("content", {}).get("membership", "")

    async def _fill_gap(self, rid: str, prev_batch: str, now: float) -> None:
        """The timeline was limited: page /messages back from prev_batch until known events."""
        frm = prev_batch
        for _ in range(200):
            page = await self.c.req(
                "GET",
                f"/_matrix/client/v3/rooms/{q(rid)}/messages",
                params={"dir": "b", "limit": "100", "from": frm},
            )
            chunk = page.get("chunk", [])
            known = any(ev.get("event_id") in self.seen_at for ev in chunk)
            for ev in chunk:
                self._record(ev, now)
            if known or not chunk or not page.get("end"):
                break
            frm = page["end"]
        self.gaps_filled += 1

    async def sweep(self, wanted: set[str], max_pages: int = 100) -> int:
        """Page /messages back from the room's end until every wanted body was seen."""
        found, frm = 0, None
        now = time.monotonic()
        for _ in range(max_pages):
            params = {"dir": "b", "limit": "100"}
            if frm:
                params["from"] = frm
            page = await self.c.req(
                "GET", f"/_matrix/client/v3/rooms/{q(self.room_id)}/messages", params=params
            )
            for ev in page.get("chunk", []):
                body = ev.get("content", {}).get("body")
                if body in wanted and body not in self.bodies_at:
                    found += 1
                self._record(ev, now)
            if not (wanted - self.bodies_at.keys()) or not page.get("chunk") or not page.get("end"):
                break
            frm = page["end"]
        async with self._cond:
            self._cond.notify_all()
        return found

    async def _loop(self) -> None:
        try:
            while True:
                params = {"timeout": "20000", "since": self.since, "filter": self._filter()}
                data = await self.c.req("GET", "/_matrix/client/v3/sync", params=params, timeout=60)
                now = time.monotonic()
                self.since = data["next_batch"]
                for rid, r in data.get("rooms", {}).get("join", {}).items():
                    if self.room_id and rid != self.room_id:
                        continue
                    self.joined.add(rid)
                    for ev in r.get("state", {}).get("events", []):
                        self._record(ev, now)
                    tl = r.get("timeline", {})
                    if tl.get("limited") and tl.get("prev_batch") and self.seen_at:
                        await self._fill_gap(rid, tl["prev_batch"], now)
                    for ev in tl.get("events", []):
                        self._record(ev, now)
                async with self._cond:
                    self._cond.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # surfaced by wait_for
            self.error = e
            async with self._cond:
                self._cond.notify_all()

    async def wait_for(self, pred, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        async with self._cond:
            while True:
                res = pred()
                if res:
                    return res
                if self.error:
                    raise BenchError(f"{self.c.label} /sync loop died: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(
                        f"{self.c.label}: timed out after {timeout}s waiting for {what}"
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), left)


def _ms(x: float) -> float:
    return round(x * 1000, 2)


class Bench:
    """The two sides of one run and the measurements between them."""

    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession):
        self.a = args
        self.c1 = Client(session, args.hs1_url, "hs1", args.timeout)
        self.c2 = Client(session, args.hs2_url, "hs2", args.timeout)
        self.w1 = SyncWatcher(self.c1, timeline_limit=args.timeline_limit)
        self.w2 = SyncWatcher(self.c2, timeline_limit=args.timeline_limit)
        self.room_id = ""
        self.room_version = ""
        self.run = secrets.token_hex(4)

    def emit(self, rec: dict[str, Any]) -> None:
        out = {"label": self.a.label, "room_version": self.room_version, **rec}
        print(json.dumps(out), flush=True)

    def sides(self, direction: str) -> tuple[Client, SyncWatcher, int | None, int | None]:
        """(sender, receiver's watcher, sender pid, receiver pid) for 'hs1->hs2' / 'hs2->hs1'."""
        if direction == "hs1->hs2":
            return self.c1, self.w2, self.a.pid1, self.a.pid2
        return self.c2, self.w1, self.a.pid2, self.a.pid1

    async def setup(self) -> None:
        for c, name in ((self.c1, self.a.hs1_name), (self.c2, self.a.hs2_name)):
            await c.register(f"fedbench-{c.label}-{self.run}")
            if not (c.user_id or "").endswith(":" + name):
                raise BenchError(f"{c.label}: user {c.user_id} is not on {name}")
        body: dict[str, Any] = {"preset": "public_chat", "name": f"fedbench {self.run}"}
        if self.a.room_version:
            body["room_version"] = self.a.room_version
        self.room_id = (await self.c1.req("POST", "/_matrix/client/v3/createRoom", body))["room_id"]
        create = await self.c1.req(
            "GET", f"/_matrix/client/v3/rooms/{q(self.room_id)}/state/m.room.create"
        )
        self.room_version = create.get("room_version", "1")
        log(f"room {self.room_id} (v{self.room_version}) {self.c1.user_id} {self.c2.user_id}")
        for w in (self.w1, self.w2):
            await w.initial()
            w.room_id = self.room_id
            w.start()
        t0 = time.monotonic()
        params = {"server_name": self.a.hs1_name, "via": self.a.hs1_name}
        await self.c2.req(
            "POST", f"/_matrix/client/v3/join/{q(self.room_id)}", {}, params=params, timeout=120
        )
        join_ms = (time.monotonic() - t0) * 1000
        uid2 = self.c2.user_id
        await self.w1.wait_for(
            lambda: self.w1.members.get(uid2) == "join", self.a.timeout, "hs2 user's join"
        )
        await self.w2.wait_for(lambda: self.room_id in self.w2.joined, self.a.timeout, "room")
        self.emit({"measurement": "join", "join_ms": round(join_ms, 1)})
        for i in range(self.a.warmup):
            for d in ("hs1->hs2", "hs2->hs1"):
                await self.one_message(d, f"warmup {d} {i} {self.run}")

    async def one_message(self, direction: str, text: str) -> tuple[float, float]:
        """Send one message and wait until the other side sees it: (from return, from start)."""
        sender, w, _, _ = self.sides(direction)
        t0 = time.monotonic()
        eid = await sender.send_text(self.room_id, text)
        t1 = time.monotonic()
        t_seen = await w.wait_for(lambda: w.seen_at.get(eid), self.a.timeout, f"event {eid}")
        return t_seen - t1, t_seen - t0

    async def latency(self, direction: str) -> None:
        _, _, spid, rpid = self.sides(direction)
        cpu0 = (cpu_seconds(spid), cpu_seconds(rpid))
        after_return, after_start = [], []
        for i in range(self.a.messages):
            r, s = await self.one_message(direction, f"lat {direction} {i} {self.run}")
            after_return.append(r)
            after_start.append(s)
        rec: dict[str, Any] = {
            "measurement": "latency",
            "direction": direction,
            "n": len(after_return),
            "p50_ms": _ms(pct(after_return, 50)),
            "p90_ms": _ms(pct(after_return, 90)),
            "p99_ms": _ms(pct(after_return, 99)),
            "max_ms": _ms(max(after_return)),
            "mean_ms": _ms(statistics.mean(after_return)),
            "from_send_start_p50_ms": _ms(pct(after_start, 50)),
            "from_send_start_p99_ms": _ms(pct(after_start, 99)),
        }
        rec.update(self._cpu(cpu0, spid, rpid, len(after_return)))
        self.emit(rec)
        log(f"latency {direction}: p50 {rec['p50_ms']} ms p99 {rec['p99_ms']} ms")

    async def ingest(self, direction: str) -> None:
        sender, w, spid, rpid = self.sides(direction)
        tag = f"burst {direction} {self.run}"
        bodies = [f"{tag} {i}" for i in range(self.a.burst)]
        todo = iter(bodies)
        cpu0 = (cpu_seconds(spid), cpu_seconds(rpid))
        t_start = time.monotonic()

        async def worker() -> None:
            for body in todo:
                await sender.send_text(self.room_id, body)

        await asyncio.gather(*(worker() for _ in range(self.a.concurrency)))
        t_sent = time.monotonic()
        via_messages = await self._wait_burst(w, bodies, direction)
        t_last = max(w.bodies_at[b] for b in bodies)
        total = t_last - t_start
        rec: dict[str, Any] = {
            "measurement": "ingest",
            "direction": direction,
            "n": len(bodies),
            "concurrency": self.a.concurrency,
            "send_s": round(t_sent - t_start, 3),
            "send_events_per_s": round(len(bodies) / (t_sent - t_start), 1),
            "ingest_s": round(total, 3),
            "ingest_events_per_s": round(len(bodies) / total, 1),
            "tail_after_last_send_ms": _ms(t_last - t_sent),
            "sync_gaps_filled": w.gaps_filled,
            "seen_only_via_messages": via_messages,
        }
        rec.update(self._cpu(cpu0, spid, rpid, len(bodies)))
        self.emit(rec)
        log(
            f"ingest {direction}: {rec['ingest_events_per_s']} ev/s "
            f"(send {rec['send_events_per_s']} ev/s, tail {rec['tail_after_last_send_ms']} ms)"
        )

    async def _wait_burst(self, w: SyncWatcher, bodies: list[str], direction: str) -> int:
        """Wait until the receiver has seen every burst body; return how many needed a sweep.

        A server that receives events whose prev_events it cannot fetch (get_missing_events
        has a small limit) accepts them with a gap: the skipped events reach no /sync, only
        /messages (which backfills them). After ``--stall`` seconds without progress we sweep
        /messages backwards, as a client scrolling up would, and count what only it found.
        """
        deadline = time.monotonic() + self.a.burst_timeout
        missing = [b for b in bodies if b not in w.bodies_at]
        swept = 0
        while missing:
            before = len(missing)
            try:
                await w.wait_for(
                    lambda: all(b in w.bodies_at for b in bodies),
                    min(self.a.stall, max(0.1, deadline - time.monotonic())),
                    "burst",
                )
            except BenchError:
                if w.error:
                    raise
            missing = [b for b in bodies if b not in w.bodies_at]
            if missing and len(missing) == before:
                if time.monotonic() >= deadline:
                    raise BenchError(
                        f"{w.c.label}: {len(missing)} of {len(bodies)} burst events never "
                        f"seen ({direction}) after {self.a.burst_timeout}s"
                    )
                found = await w.sweep(set(missing))
                swept += found
                log(f"  stalled with {len(missing)} unseen; /messages sweep found {found}")
                missing = [b for b in bodies if b not in w.bodies_at]
        return swept

    @staticmethod
    def _cpu(cpu0: tuple[float | None, float | None], spid, rpid, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, pid, before in (("sender", spid, cpu0[0]), ("receiver", rpid, cpu0[1])):
            after = cpu_seconds(pid)
            if before is not None and after is not None:
                out[f"{key}_cpu_s"] = round(after - before, 3)
                out[f"{key}_cpu_ms_per_event"] = round((after - before) * 1000 / n, 3)
        return out


async def main(args: argparse.Namespace) -> int:
    conn = aiohttp.TCPConnector(limit=max(20, args.concurrency * 2 + 4))
    async with aiohttp.ClientSession(connector=conn) as session:
        bench = Bench(args, session)
        try:
            await bench.setup()
            for d in ("hs1->hs2", "hs2->hs1"):
                if args.messages:
                    await bench.latency(d)
            for d in ("hs1->hs2", "hs2->hs1"):
                if args.burst:
                    await bench.ingest(d)
        except BenchError as e:
            log(f"FAIL: {e}")
            bench.emit({"measurement": "error", "error": str(e)})
            return 1
        finally:
            await bench.w1.stop()
            await bench.w2.stop()
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hs1-url", default=env("FED_HS1_URL", "http://127.0.0.1:8491"))
    ap.add_argument("--hs1-name", default=env("FED_HS1_NAME", "127.0.0.1:8481"))
    ap.add_argument("--hs2-url", default=env("FED_HS2_URL", "http://127.0.0.1:8492"))
    ap.add_argument("--hs2-name", default=env("FED_HS2_NAME", "127.0.0.1:8482"))
    ap.add_argument("--room-version", default="12", help="'' = the server's default")
    ap.add_argument("--messages", type=int, default=50, help="latency messages per direction")
    ap.add_argument("--burst", type=int, default=500, help="ingest burst size per direction")
    ap.add_argument("--concurrency", type=int, default=10, help="PUTs in flight in a burst")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured messages each way")
    ap.add_argument("--timeline-limit", type=int, default=200, help="/sync filter timeline")
    ap.add_argument("--timeout", type=float, default=30, help="per request / per message wait")
    ap.add_argument("--stall", type=float, default=5, help="s without progress -> sweep")
    ap.add_argument("--burst-timeout", type=float, default=300, help="wait for a whole burst")
    ap.add_argument("--pid1", type=int, help="hs1 server pid, for CPU seconds")
    ap.add_argument("--pid2", type=int, help="hs2 server pid, for CPU seconds")
    ap.add_argument("--label", default="", help="copied into every JSON line")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
