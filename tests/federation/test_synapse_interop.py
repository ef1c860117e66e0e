"""Interop with real Synapse: our server in each seat of the shared fedcheck.py.

fedcheck.py drives two homeservers through their client APIs only (register, create a
public room on hs1, history, remote join by room ID, messages both ways in /sync,
latency, backfill of pre-join history on hs2, invite + join, room rename) and exits 0 only
when every step passes. We run it with our server as hs2 (Synapse creates the room, we
join over federation, we backfill from Synapse) and as hs1 (we create, Synapse joins with
partial state and backfills from us), in room versions 10, 11 and 12.

Synapse comes from ../shared/interop/fedpair.sh (`install` builds $FED_DIR/venv). The
tests skip when it is not installed, unless SYNAPSE_INTEROP=1 (set by .ci/run), which
turns a missing Synapse into a failure so CI cannot silently skip them.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest

from homeserver.storage.transactions import DOWN_CACHE_S
from tests.deployment import missing_parts
from tests.federation import synapse_harness as harness

_REASON = harness.unavailable_reason()
_REQUIRED = os.environ.get("SYNAPSE_INTEROP") == "1"

if _REASON and not _REQUIRED:
    pytest.skip(f"Synapse interop not available: {_REASON}", allow_module_level=True)

ROOM_VERSIONS = ["10", "11", "12"]

#: Every step fedcheck.py runs, in order; all must be reported ok.
FEDCHECK_STEPS = [
    "keys",
    "versions",
    "register",
    "create_room",
    "pre_history",
    "join_remote",
    "sync_join",
    "msg_1to2",
    "msg_2to1",
    "latency_1to2",
    "latency_2to1",
    "backfill",
    "invite",
    "room_name",
]


@pytest.fixture(scope="module", autouse=True)
def _synapse_ready() -> Iterator[None]:
    if _REASON:
        pytest.fail(f"SYNAPSE_INTEROP=1 but Synapse interop cannot run: {_REASON}")
    lock = harness.seats_lock(timeout=600 if _REQUIRED else 5)
    if lock is None:
        pytest.skip(f"another run holds the fedpair seats ({harness.fed_dir()})")
    taken = harness.ports_taken()
    if taken:
        os.close(lock)
        message = f"fedpair ports already in use by something else: {taken}"
        if _REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield
        harness.fedpair("stop")
    finally:
        os.close(lock)


def _other(seat: str) -> str:
    return "hs2" if seat == "hs1" else "hs1"


def _run_seat(
    seat: str,
    room_version: str | None,
    base: Path,
    extras: bool = False,
    workers: bool = False,
) -> harness.FedcheckResult:
    """Fresh Synapse in the other seat, our server in `seat`, then fedcheck (or, with
    `extras`, synapse_extras.py in the servers' default room version)."""
    other = _other(seat)
    # Synapse remembers failing destinations (and our previous signing key) in its DB.
    harness.fedpair("wipe", other)
    harness.fedpair("start", other)
    # HS_TEST_WORKERS=1 runs every interop test against the worker deployment.
    workers = workers or os.environ.get("HS_TEST_WORKERS") == "1"
    ours: Any = (
        harness.OurDeployment(seat, base / "ours")
        if workers
        else harness.OurServer(seat, base / "ours")
    )
    try:
        ours.start()
        urls = {seat: ours.client_url, other: f"http://127.0.0.1:{harness.SEATS[other][1]}"}
        if extras:
            result = harness.run_extras(urls["hs1"], urls["hs2"], base / "extras.json")
        else:
            result = harness.run_fedcheck(
                urls["hs1"], urls["hs2"], room_version, base / "fedcheck.json"
            )
    finally:
        ours.stop()
        harness.fedpair("stop", other)
    if result.returncode != 0 and not (extras and result.results):
        pytest.fail(
            f"{'extras' if extras else 'fedcheck'} with our server as {seat}, "
            f"room version {room_version} failed:\n"
            f"{result.output}\n--- our server's log (tail) ---\n{ours.log_tail()}"
        )
    return result


def _assert_all_steps(result: harness.FedcheckResult, room_version: str) -> None:
    assert result.results["ok"] is True
    assert result.results["room_version"] == room_version
    steps = [s["step"] for s in result.results["steps"] if s["ok"]]
    assert steps == FEDCHECK_STEPS
    for direction in ("latency_1to2", "latency_2to1"):
        lat = result.results["latency"][direction]
        assert lat["n"] == 50
        print(f"{direction}: p50={lat['p50_ms']}ms p99={lat['p99_ms']}ms")


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
def test_we_join_a_synapse_room(room_version: str, tmp_path: Path) -> None:
    """Our server as hs2: Synapse hosts the room; we join, chat, backfill, get invited."""
    result = _run_seat("hs2", room_version, tmp_path)
    _assert_all_steps(result, room_version)


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
def test_synapse_joins_our_room(room_version: str, tmp_path: Path) -> None:
    """Our server as hs1: we host the room; Synapse joins (partial state), chats, backfills."""
    result = _run_seat("hs1", room_version, tmp_path)
    _assert_all_steps(result, room_version)


@pytest.mark.parametrize("seat", ["hs1", "hs2"])
def test_synapse_and_our_worker_deployment(seat: str, tmp_path: Path) -> None:
    """Issue 16: our server as the 7-process deployment behind nginx (TLS federation
    port), in either seat, in the default room version."""
    why = missing_parts()
    if why is not None:
        pytest.fail(f"the worker deployment cannot run: {why}")
    result = _run_seat(seat, "12", tmp_path, workers=True)
    _assert_all_steps(result, "12")


#: What synapse_extras.py checks; each must come back "ok".
EXTRA_CHECKS = [
    "typing 1->2",
    "typing 2->1",
    "receipt by 2 seen on 1",
    "receipt by 1 seen on 2",
    "remote profile",
    "remote alias",
    "keys query/claim of hs2 user from hs1",
    "keys query/claim of hs1 user from hs2",
    "presence 1->2",
    "presence 2->1",
    "device list 1->2",
    "device list 2->1",
    "to-device 1->2",
    "to-device 2->1",
    "redaction 1->2",
    "redaction 2->1",
    "power level + state by remote user",
    "leave by hs2 user",
    "rejoin",
    "kick of hs2 user",
    "hs1 joins hs2 room",
    "media 1->2",
    "media 2->1",
    "space walk 1->2",
    "space walk 2->1",
    "sliding sync same answers",
]


@pytest.mark.parametrize("seat", ["hs2", "hs1"])
def test_everyday_features_with_synapse(seat: str, tmp_path: Path) -> None:
    """EDUs (typing, receipts, to-device), E2EE key queries, profile/alias queries,
    redactions, power levels, leave/rejoin/kick and rooms hosted on either side."""
    result = _run_seat(seat, None, tmp_path, extras=True)
    # Device lists go both ways: a new login of our user reaches Synapse users as an
    # m.device_list_update EDU, and Synapse's updates reach ours.
    assert dict(result.results) == {name: "ok" for name in EXTRA_CHECKS}, result.output


# -- SIGKILLed federation workers, with Synapse as the peer (issue 16's faults) --------

SENDS_EACH = 25  # messages per local sender while the federation sender is killed
REMOTE_SENDS = 20  # messages Synapse's user sends while our inbound worker is killed
SEEN_WITHIN_S = 90.0  # Synapse retries and catches up within this (both directions)


def test_killed_federation_workers_lose_nothing(tmp_path: Path) -> None:
    """Our seven-process deployment hosts a room that a Synapse user joined. Two local
    users send while the federation sender is SIGKILLed and restarted: Synapse's user
    gets every message, each once. Then Synapse's user sends while our federation inbound
    worker is SIGKILLed and restarted: our users get every message, each once."""
    why = missing_parts()
    if why is not None:
        pytest.fail(f"the worker deployment cannot run: {why}")
    ours = harness.OurDeployment("hs1", tmp_path / "ours")
    _against_fresh_synapse(
        ours, lambda synapse_url: _federation_faults(ours.deployment, ours.client_url, synapse_url)
    )


def _against_fresh_synapse(ours: Any, scenario: Any) -> None:
    """Run `scenario(synapse_url)` with our server (or deployment) `ours` in hs1 and a
    freshly wiped Synapse in hs2; a failure carries our logs."""
    harness.fedpair("wipe", "hs2")
    harness.fedpair("start", "hs2")
    try:
        ours.start()
        synapse_url = f"http://127.0.0.1:{harness.SEATS['hs2'][1]}"
        try:
            asyncio.run(scenario(synapse_url))
        except Exception as e:
            pytest.fail(f"{e!r}\n--- our server's logs (tails) ---\n{ours.log_tail()}")
    finally:
        ours.stop()
        harness.fedpair("stop", "hs2")


class _User:
    """One account on one server, spoken to through its client API."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.token, self.user_id = "", ""

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=body, params=params, headers=headers
        ) as response:
            data = await response.json(content_type=None)
            if response.status != 200 and not (response.status == 401 and "session" in data):
                raise AssertionError(f"{method} {path}: {response.status} {data}")
            return data

    async def register(self, localpart: str) -> _User:
        body: dict[str, Any] = {"username": localpart, "password": "pw " + localpart}
        first = await self.call("POST", "/_matrix/client/v3/register", body)
        if "access_token" not in first:
            body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
            first = await self.call("POST", "/_matrix/client/v3/register", body)
        self.token, self.user_id = first["access_token"], first["user_id"]
        return self

    async def send(self, room: str, text: str) -> None:
        path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{quote(text)}"
        await self.call("PUT", path, {"msgtype": "m.text", "body": text})

    async def bodies(self, room: str) -> list[tuple[str, str]]:
        """(event ID, body) of every message in the room, newest first, read back with
        /messages (which backfills what the server has not got)."""
        seen: list[tuple[str, str]] = []
        params = {"dir": "b", "limit": "100"}
        for _ in range(20):
            page = await self.call(
                "GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages", **params
            )
            for event in page.get("chunk", []):
                if event.get("type") == "m.room.message":
                    seen.append((event["event_id"], event["content"].get("body", "")))
            if not page.get("chunk") or "end" not in page:
                break
            params["from"] = page["end"]
        return seen


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def _seen_once(user: _User, room: str, expected: set[str]) -> None:
    """Wait until `user` has every expected message; then each must be there once."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        seen = await user.bodies(room)
        got = [body for _, body in seen if body in expected]
        if set(got) == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    missing = expected - set(got)
    assert not missing, f"{user.user_id} never got {sorted(missing)}"
    twice = sorted(body for body in set(got) if got.count(body) > 1)
    assert not twice, f"{user.user_id} got these more than once: {twice}"
    assert len({event_id for event_id, body in seen if body in expected}) == len(expected)


async def _federation_faults(deployment: Any, ours_url: str, synapse_url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        alice = await _User(session, ours_url).register("alice")
        carol = await _User(session, ours_url).register("carol")
        bob = await _User(session, synapse_url).register("bob")
        created = await alice.call(
            "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}
        )
        room = created["room_id"]
        await carol.call("POST", f"/_matrix/client/v3/join/{quote(room)}", {})
        our_name = f"127.0.0.1:{harness.SEATS['hs1'][0]}"
        await bob.call("POST", f"/_matrix/client/v3/join/{quote(room)}", {}, server_name=our_name)

        # Our federation sender dies (SIGKILL) a third of the way through two senders'
        # messages and comes back a second later.
        sent_here = {f"{who} {i}" for who in ("alice", "carol") for i in range(SENDS_EACH)}

        async def sends(user: _User, who: str, kill_at: int | None) -> None:
            for i in range(SENDS_EACH):
                await user.send(room, f"{who} {i}")
                if i == kill_at:
                    await asyncio.to_thread(deployment.kill, "federation_sender1")
                    restart = asyncio.to_thread(deployment.start_process, "federation_sender1")
                    pending.append(asyncio.ensure_future(_later(1.0, restart)))

        pending: list[asyncio.Future[Any]] = []
        await asyncio.gather(sends(alice, "alice", SENDS_EACH // 3), sends(carol, "carol", None))
        await asyncio.gather(*pending)
        await _seen_once(bob, room, sent_here)

        # Our federation inbound worker dies while Synapse's user sends, and comes back.
        sent_there = {f"bob {i}" for i in range(REMOTE_SENDS)}
        for i in range(REMOTE_SENDS):
            await bob.send(room, f"bob {i}")
            if i == REMOTE_SENDS // 4:
                await asyncio.to_thread(deployment.kill, "federation_inbound1")
            if i == REMOTE_SENDS // 2:
                await asyncio.to_thread(deployment.start_process, "federation_inbound1")
        # Synapse backs off a destination that failed, until it hears from it again:
        # a message of ours tells it we are back.
        await alice.send(room, "back")
        await _seen_once(alice, room, sent_there)
        await _seen_once(carol, room, sent_there)


async def _later(delay_s: float, work: Any) -> Any:
    await asyncio.sleep(delay_s)
    return await work


# -- Synapse down for a while: our outbox stays bounded, Synapse catches up ------------

DOWN_SENDS = 16  # more than one get_missing_events brings (10)


def test_synapse_down_for_a_while_catches_up_from_our_newest_event(tmp_path: Path) -> None:
    """Synapse is stopped while our user sends: once we back off from it we queue no
    more PDUs for it, only the room's newest event (federation_catchup). Synapse comes
    back, its user speaks (so we stop backing off), and it gets that event, fetches the
    gap from us and its user reads every message, each once."""
    ours = harness.OurServer("hs1", tmp_path / "ours")
    _against_fresh_synapse(ours, lambda synapse_url: _synapse_down(ours, synapse_url))


async def _synapse_down(ours: harness.OurServer, synapse_url: str) -> None:
    synapse_name = f"127.0.0.1:{harness.SEATS['hs2'][0]}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        alice = await _User(session, ours.client_url).register("alice")
        bob = await _User(session, synapse_url).register("bob")
        created = await alice.call(
            "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}
        )
        room = created["room_id"]
        await bob.call(
            "POST", f"/_matrix/client/v3/join/{quote(room)}", {}, server_name=ours.server_name
        )
        await alice.send(room, "before")
        await _seen_once(bob, room, {"before"})

        await asyncio.to_thread(harness.fedpair, "stop", "hs2")
        sent = [f"down {i}" for i in range(DOWN_SENDS)]
        await alice.send(room, sent[0])
        async with aiosqlite.connect(ours.base / "homeserver.db") as db:
            deadline = time.monotonic() + 30
            while True:
                async with db.execute(
                    "SELECT failure_ts FROM destination_retry WHERE destination = ?",
                    (synapse_name,),
                ) as cursor:
                    row = await cursor.fetchone()
                if row is not None and row[0] is not None:
                    break
                assert time.monotonic() < deadline, "we never backed off from a stopped Synapse"
                await asyncio.sleep(0.2)
            await asyncio.sleep(DOWN_CACHE_S + 0.2)  # every writer of the room sees it
            for text in sent[1:]:
                await alice.send(room, text)
            async with db.execute(
                "SELECT COUNT(*) FROM federation_outbox WHERE destination = ?"
                " AND event_id IS NOT NULL",
                (synapse_name,),
            ) as cursor:
                (queued,) = await cursor.fetchone()
            async with db.execute(
                "SELECT room_id FROM federation_catchup WHERE destination = ?", (synapse_name,)
            ) as cursor:
                catch_up = [r[0] for r in await cursor.fetchall()]
        assert queued <= 1 and catch_up == [room], (queued, catch_up)

        await asyncio.to_thread(harness.fedpair, "start", "hs2")
        await bob.send(room, "bob is back")  # Synapse speaks to us: we stop backing off
        await _seen_once(alice, room, {"bob is back"})
        await _seen_once(bob, room, {"before", *sent})
