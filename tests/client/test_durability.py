"""Crash durability of `PUT /send` (issue 3: "a send that returned 200 is durable"),
on one process and on the worker deployment (issue 16: its writer SIGKILLed).

The server runs as the README starts it (`generate-config --open-registration`, then
`python -m homeserver -c CONFIG`, rate limits off). Two users in one room; eight
concurrent senders PUT messages with unique transaction IDs and record every 200. While
requests are in flight the server is SIGKILLed, then restarted on the same data
directory, three times at different moments. After each restart:

- every acknowledged event is served by `/event/{id}` with the content that was sent,
  appears in `/messages`, and reaches both members' `/sync` from a token taken before
  the load (so sync tokens also survive the crash);
- retrying an acknowledged request (same device, same txn ID) answers the same event;
- retrying a request that was in flight at the kill answers exactly one event, either
  the one persisted just before the crash or a fresh one; no txn ever yields two events;
- members and power levels are unchanged; the server restarts without errors in its
  log, and SQLite's integrity check passes on the database it leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SERVER_NAME = "localhost"
START_TIMEOUT_S = 20
SENDERS = 8
KILL_AFTER_S = (0.7, 1.2, 1.7)  # three different moments into the load
CHECK_CONCURRENCY = 16
SYNC_TIMELINE_LIMIT = 1000  # the server's cap; a syncing client never needs more here
ERROR_MARKERS = (" ERROR ", " CRITICAL ", "Traceback", "corrupt", "malformed")


class Server:
    """Our homeserver as a subprocess on a fixed config and data directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "homeserver.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        subprocess.run(
            [sys.executable, "-m", "homeserver", "generate-config", "--server-name", SERVER_NAME,
             "--data-dir", "data", "--port", str(self.port), "--open-registration",
             "-o", str(self.config_path)],
            cwd=workdir, check=True, capture_output=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        config = yaml.safe_load(self.config_path.read_text())
        config["rc_enabled"] = False
        config["password_hashing"] = {"opslimit": 1, "memlimit": 8192}  # fast registration
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "homeserver", "-c", str(self.config_path)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited ({self.proc.returncode}): {self.log_path.read_text()}"
                )
            try:
                async with http.get(self.url + "/_matrix/client/versions") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "server did not start in time"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown hooks, no flushing, whatever was in flight."""
        assert self.proc is not None and self.proc.poll() is None, "server died on its own"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def send_bases(self) -> list[str]:
        return [self.url]

    async def caught_up(self, http: aiohttp.ClientSession, room_id: str, user: User) -> None:
        """One process: serving again is being caught up."""

    def log_problems(self) -> list[str]:
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if any(marker in line for marker in ERROR_MARKERS)
        ]


class WorkersServer:
    """The seven-process deployment (tests/deployment.py FULL_LAYOUT): PostgreSQL,
    Redis, the main, two client readers, a federation inbound worker, a federation
    sender, two event persisters, nginx. The writers are what get SIGKILLed: the main
    in the first round, both event persisters in the second (the room is then written
    by the main), all three in the third. Senders go through nginx and through each
    reader; syncs go through nginx to the readers, which outlive the kills."""

    KILLED = (("main",), ("event_persister1", "event_persister2"))
    KILLED += (KILLED[0] + KILLED[1],)

    def __init__(self, workdir: Path) -> None:
        from tests.deployment import FULL_LAYOUT, Deployment

        self.deployment = Deployment(workdir, **FULL_LAYOUT, server_name=SERVER_NAME)
        self.started = False
        self.rounds = 0

    @property
    def url(self) -> str:
        return self.deployment.url

    @property
    def send_bases(self) -> list[str]:
        ports = [self.deployment.processes[f"client_reader{i}"].port for i in (1, 2)]
        return [self.url, *(f"http://127.0.0.1:{port}" for port in ports)]

    async def start(self, http: aiohttp.ClientSession) -> None:
        if not self.started:
            await asyncio.to_thread(self.deployment.start)
            self.started = True
        else:
            for name in self.KILLED[(self.rounds - 1) % len(self.KILLED)]:
                await asyncio.to_thread(self.deployment.start_process, name)

    async def caught_up(self, http: aiohttp.ClientSession, room_id: str, user: User) -> None:
        """A message sent through each reader: its answer waits until that reader has
        caught up with the restarted main (so its syncs cover everything persisted)."""
        for i, base in enumerate(self.send_bases[1:]):
            for _ in range(100):
                probe = f"probe{time.monotonic()}-{i}"  # unique: not a repeated txn
                status, body = await _json(
                    http, "PUT", _send_url(base, room_id, probe),
                    user, json={"msgtype": "m.text", "body": probe},
                )  # fmt: skip
                if status == 200:
                    break
                await asyncio.sleep(0.1)  # the reader's pool reconnecting to the main
            else:
                raise AssertionError(f"{base} never forwarded a send again: {body}")

    def kill(self) -> None:
        for name in self.KILLED[self.rounds % len(self.KILLED)]:
            self.deployment.kill(name)
        self.rounds += 1

    def stop(self) -> None:
        self.deployment.stop()

    def log_problems(self) -> list[str]:
        return [
            f"{p.name}: {line}"
            for p in self.deployment.processes.values()
            for line in p.log.read_text(errors="replace").splitlines()
            if any(marker in line for marker in ERROR_MARKERS)
        ]


@dataclass
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Ledger:
    """What the clients know: acknowledged sends and sends whose answer never came."""

    acked: dict[str, tuple[User, str]] = field(default_factory=dict)  # txn -> (user, event)
    in_flight: dict[str, User] = field(default_factory=dict)  # txn -> user


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, user: User | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = user.headers if user is not None else {}
    async with http.request(method, url, headers=headers, **kw) as r:
        return r.status, await r.json()


async def _register(http: aiohttp.ClientSession, url: str, localpart: str) -> User:
    body: dict[str, Any] = {"username": localpart, "password": "durable pw"}
    status, first = await _json(http, "POST", url + "/_matrix/client/v3/register", json=body)
    assert status == 401, first
    body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
    status, done = await _json(http, "POST", url + "/_matrix/client/v3/register", json=body)
    assert status == 200, done
    return User(done["user_id"], done["access_token"])


def _send_url(base: str, room_id: str, txn_id: str) -> str:
    return f"{base}/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn_id}"


def _content(txn_id: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": f"durable {txn_id}"}


async def _sender(
    http: aiohttp.ClientSession,
    base: str,
    room_id: str,
    user: User,
    prefix: str,
    ledger: Ledger,
    stop: asyncio.Event,
) -> None:
    """PUT messages one after another until the server dies (or `stop`)."""
    n = 0
    while not stop.is_set():
        txn_id = f"{prefix}-{n}"
        n += 1
        ledger.in_flight[txn_id] = user
        try:
            async with http.put(
                _send_url(base, room_id, txn_id), headers=user.headers, json=_content(txn_id)
            ) as r:
                body = await r.json()
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
            return  # the server is gone; this txn stays in flight
        if r.status in (502, 503) and body.get("errcode") == "M_UNKNOWN":
            return  # a worker or nginx answering for the killed writer: in flight too
        assert r.status == 200, (txn_id, r.status, body)
        assert isinstance(body.get("event_id"), str), body
        del ledger.in_flight[txn_id]
        ledger.acked[txn_id] = (user, body["event_id"])


async def _bounded(limit: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


async def _room_history(
    http: aiohttp.ClientSession, base: str, room_id: str, user: User
) -> list[dict[str, Any]]:
    """Every event of the room via /messages, newest first, following `end` to the start."""
    url = f"{base}/_matrix/client/v3/rooms/{quote(room_id)}/messages"
    events: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": "1000"}
    for _ in range(1000):
        status, page = await _json(http, "GET", url, user, params=params)
        assert status == 200, page
        events.extend(page["chunk"])
        if "end" not in page or not page["chunk"]:
            return events
        params["from"] = page["end"]
    raise AssertionError("/messages never reached the start of the room")


async def _assert_history_matches(
    http: aiohttp.ClientSession, base: str, room_id: str, user: User, ledger: Ledger
) -> None:
    """Each txn's message is in the room's history exactly once, as the acked event."""
    by_body: dict[str, list[str]] = {}
    for ev in await _room_history(http, base, room_id, user):
        body = ev.get("content", {}).get("body")
        if ev["type"] == "m.room.message" and isinstance(body, str):
            by_body.setdefault(body, []).append(ev["event_id"])
    twice = {body: ids for body, ids in by_body.items() if len(ids) > 1}
    assert not twice, f"txns that produced two events: {twice}"
    for txn_id, (_, event_id) in ledger.acked.items():
        assert by_body.get(_content(txn_id)["body"]) == [event_id], txn_id


async def _sync(
    http: aiohttp.ClientSession, base: str, user: User, since: str | None, timeout_ms: int = 0
) -> dict[str, Any]:
    params = {
        "timeout": str(timeout_ms),
        "filter": json.dumps({"room": {"timeline": {"limit": SYNC_TIMELINE_LIMIT}}}),
    }
    if since is not None:
        params["since"] = since
    status, body = await _json(http, "GET", base + "/_matrix/client/v3/sync", user, params=params)
    assert status == 200, body
    return body


@dataclass
class Syncer:
    """A member's client syncing incrementally across the crash: it keeps its last
    `next_batch` and collects every timeline event ID it is shown, so an event that
    was acknowledged but never reaches it (a gap, a token ahead of the data) fails."""

    user: User
    room_id: str
    token: str | None = None
    seen: set[str] = field(default_factory=set)

    def _take(self, body: dict[str, Any]) -> int:
        timeline = body.get("rooms", {}).get("join", {}).get(self.room_id, {}).get("timeline")
        if self.token is not None and timeline is not None:
            assert timeline["limited"] is False, f"{self.user.user_id}: a gap in its timeline"
        events = timeline["events"] if timeline is not None else []
        self.seen.update(ev["event_id"] for ev in events)
        self.token = body["next_batch"]
        return len(events)

    async def run_until_server_dies(
        self, http: aiohttp.ClientSession, base: str, stop: asyncio.Event
    ) -> None:
        """Long-poll while the senders run; return once the server is gone (or, with
        workers, whose readers outlive the writer, once the writer was killed)."""
        while not stop.is_set():
            try:
                body = await _sync(http, base, self.user, self.token, timeout_ms=500)
            except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                return
            self._take(body)

    async def catch_up(self, http: aiohttp.ClientSession, base: str) -> None:
        """Sync from the pre-crash token until nothing new comes."""
        for _ in range(100):
            if self._take(await _sync(http, base, self.user, self.token)) == 0:
                return
        raise AssertionError("sync never caught up")


async def _state(
    http: aiohttp.ClientSession, base: str, room_id: str, user: User
) -> tuple[dict[str, Any], dict[str, Any]]:
    room = f"{base}/_matrix/client/v3/rooms/{quote(room_id)}"
    status, members = await _json(http, "GET", room + "/joined_members", user)
    assert status == 200, members
    status, power = await _json(http, "GET", room + "/state/m.room.power_levels/", user)
    assert status == 200, power
    return members["joined"], power


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=15)
    # A fresh connection per request: a request never rides a socket of a killed server.
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(force_close=True, limit=64)
    ) as session:
        yield session


async def _check_after_restart(
    http: aiohttp.ClientSession,
    base: str,
    room_id: str,
    ledger: Ledger,
    syncers: list[Syncer],
    state_before: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    room = f"{base}/_matrix/client/v3/rooms/{quote(room_id)}"
    alice, bob = (syncer.user for syncer in syncers)

    # Every acknowledged event is served with what was sent.
    async def fetch(txn_id: str, user: User, event_id: str) -> None:
        status, event = await _json(http, "GET", f"{room}/event/{quote(event_id)}", user)
        assert status == 200, (txn_id, event_id, event)
        assert event["event_id"] == event_id
        assert event["sender"] == user.user_id
        assert event["content"] == _content(txn_id)
        assert event["unsigned"].get("transaction_id") == txn_id  # the sender's own device

    await _bounded(
        CHECK_CONCURRENCY,
        [fetch(t, u, e) for t, (u, e) in ledger.acked.items()],
    )

    # /messages holds every acknowledged event, each txn exactly once.
    await _assert_history_matches(http, base, room_id, bob, ledger)

    # Both members' syncing clients, resuming with their pre-crash tokens, have been
    # shown every acknowledged event.
    acked_ids = {e for _, e in ledger.acked.values()}
    for syncer in syncers:
        await syncer.catch_up(http, base)
        missing = acked_ids - syncer.seen
        assert not missing, f"{syncer.user.user_id} was never shown {len(missing)} acked events"

    # Retrying an acknowledged request answers the same event.
    async def retry_acked(txn_id: str, user: User, event_id: str) -> None:
        status, body = await _json(
            http, "PUT", _send_url(base, room_id, txn_id), user, json=_content(txn_id)
        )
        assert (status, body) == (200, {"event_id": event_id}), txn_id

    await _bounded(
        CHECK_CONCURRENCY,
        [retry_acked(t, u, e) for t, (u, e) in ledger.acked.items()],
    )

    # Retrying what was in flight at the kill gives one event per txn, twice the same.
    async def retry_in_flight(txn_id: str, user: User) -> None:
        answers = []
        for _ in range(2):
            status, body = await _json(
                http, "PUT", _send_url(base, room_id, txn_id), user, json=_content(txn_id)
            )
            assert status == 200, (txn_id, body)
            answers.append(body["event_id"])
        assert answers[0] == answers[1], txn_id
        ledger.acked[txn_id] = (user, answers[0])

    in_flight = dict(ledger.in_flight)
    ledger.in_flight.clear()
    await _bounded(CHECK_CONCURRENCY, [retry_in_flight(t, u) for t, u in in_flight.items()])
    await _assert_history_matches(http, base, room_id, alice, ledger)

    # The room's state is intact.
    assert await _state(http, base, room_id, alice) == state_before
    await _assert_unread_counts(http, base, room_id, [alice, bob])


async def _assert_unread_counts(
    http: aiohttp.ClientSession, base: str, room_id: str, users: list[User]
) -> None:
    """Each member's unread count in /sync is the other's messages since their own last
    event (sending moves one's read position): the push actions of events committed just
    before the kill were recorded too (push/actions.py, catch_up). A deployment's reader
    may take a moment to hear of the restarted writer's catch-up."""
    history = await _room_history(http, base, room_id, users[0])  # newest first
    room_only = json.dumps({"room": {"rooms": [room_id], "timeline": {"limit": 1}}})
    for user in users:
        expected = 0
        for event in history:
            if event["sender"] == user.user_id:
                break
            expected += event["type"] == "m.room.message"
        got = None
        for _ in range(30):
            status, body = await _json(
                http, "GET", base + "/_matrix/client/v3/sync", user, params={"filter": room_only}
            )
            assert status == 200, body
            got = body["rooms"]["join"][room_id]["unread_notifications"]["notification_count"]
            if got == expected:
                break
            await asyncio.sleep(0.2)
        assert got == expected, (user.user_id, got, expected)


@pytest.mark.parametrize("layout", ["single", "workers"])
async def test_acknowledged_sends_survive_sigkill(
    http: aiohttp.ClientSession, tmp_path: Path, layout: str
) -> None:
    server: Server | WorkersServer
    if layout == "workers":
        from tests.deployment import missing_parts

        why = missing_parts()
        if why is not None:
            if os.environ.get("CI"):
                pytest.fail(f"the worker deployment must run in CI: {why}")
            pytest.skip(why)
        server = WorkersServer(tmp_path)
    else:
        server = Server(tmp_path)
    try:
        await server.start(http)
        base = server.url
        alice = await _register(http, base, "alice")
        bob = await _register(http, base, "bob")
        status, created = await _json(
            http,
            "POST",
            base + "/_matrix/client/v3/createRoom",
            alice,
            json={"preset": "private_chat", "invite": [bob.user_id]},
        )
        assert status == 200, created
        room_id = created["room_id"]
        status, joined = await _json(
            http, "POST", f"{base}/_matrix/client/v3/rooms/{quote(room_id)}/join", bob, json={}
        )
        assert status == 200, joined
        state_before = await _state(http, base, room_id, alice)
        assert set(state_before[0]) == {alice.user_id, bob.user_id}
        assert state_before[1]["events_default"] == 0  # both may send messages

        ledger = Ledger()
        syncers = [Syncer(alice, room_id), Syncer(bob, room_id)]
        for syncer in syncers:
            await syncer.catch_up(http, base)
        for round_no, kill_after in enumerate(KILL_AFTER_S):
            stop = asyncio.Event()
            senders = [
                asyncio.create_task(
                    _sender(
                        http,
                        server.send_bases[i % len(server.send_bases)],
                        room_id,
                        (alice, bob)[i % 2],
                        f"r{round_no}s{i}",
                        ledger,
                        stop,
                    )
                )
                for i in range(SENDERS)
            ]
            syncing = [
                asyncio.create_task(s.run_until_server_dies(http, base, stop)) for s in syncers
            ]
            acked_before = len(ledger.acked)
            await asyncio.sleep(kill_after)
            assert len(ledger.acked) > acked_before, "no send succeeded before the kill"
            assert len(ledger.in_flight) > 0, "nothing in flight at the kill"
            server.kill()
            stop.set()
            await asyncio.wait_for(asyncio.gather(*senders, *syncing), timeout=15)

            await server.start(http)
            assert server.log_problems() == []
            await server.caught_up(http, room_id, alice)
            await _check_after_restart(http, base, room_id, ledger, syncers, state_before)
    finally:
        server.stop()
    assert server.log_problems() == []  # the last run, stopped with SIGTERM
    if layout == "workers":
        return  # PostgreSQL: the database checks its own pages

    # The database the last run left behind is sound.
    conn = sqlite3.connect(f"file:{tmp_path / 'data' / 'homeserver.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
