"""Presence changes on its own: idle -> unavailable, no syncs -> offline, sync -> online.

The app tests shorten the timeouts through the service's class attributes (the
documented way: no config keys) and watch another user's /sync. The unit tests drive
the timer state machine with a fake clock and check EDUs, the notifier and the
bounded per-tick work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import homeserver.ephemeral.presence as presence_mod
from homeserver.app import create_app
from homeserver.appstate import PRESENCE
from homeserver.config import Config
from homeserver.ephemeral.deadlines import DeadlineQueue
from homeserver.ephemeral.edus import EduOutbox
from homeserver.ephemeral.presence import PresenceService, row_from_json
from homeserver.storage.presence import PresenceRow
from tests import deployment_mode
from tests.client.helpers import auth, join_room, make_room, make_user

V3 = "/_matrix/client/v3"
IDLE_MS = 400
# The window in which a user is "unavailable" before going offline is SYNC_MS - IDLE_MS:
# wide enough that a loaded machine (the whole suite on 2 cores) still sees it.
SYNC_MS = 2400


@pytest.fixture
async def client(
    aiohttp_client: Any, tmp_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> TestClient:
    if deployment_mode.MODE:
        pytest.skip("shortens presence timeouts in this process; a deployment's are its own")
    monkeypatch.setattr(PresenceService, "IDLE_TIMEOUT_MS", IDLE_MS)
    monkeypatch.setattr(PresenceService, "SYNC_TIMEOUT_MS", SYNC_MS)
    monkeypatch.setattr(PresenceService, "CHECK_INTERVAL_S", 0.05)
    return await aiohttp_client(create_app(tmp_config()))


async def sync(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    query = {k: str(v) for k, v in params.items()}
    response = await client.get(f"{V3}/sync", params=query, headers=auth(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def setup_pair(client: TestClient) -> tuple[str, str, str, str, str]:
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room_id = await make_room(client, alice)
    await join_room(client, room_id, bob)
    return alice, alice_token, bob, bob_token, room_id


class Watcher:
    """Bob's view of Alice's presence through incremental /sync (he never sets his own)."""

    def __init__(self, client: TestClient, token: str, target: str, since: str) -> None:
        self.client, self.token, self.target, self.since = client, token, target, since

    async def next(self, timeout_s: float = 4.0) -> dict[str, Any]:
        """Long-poll until an m.presence event of the target arrives; its content."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = await sync(
                self.client, self.token, since=self.since, timeout=500, set_presence="offline"
            )
            self.since = body["next_batch"]
            events = [e for e in body["presence"]["events"] if e["sender"] == self.target]
            if events:
                assert events[0]["type"] == "m.presence"
                return events[0]["content"]
        raise AssertionError("no presence update arrived")


async def test_sync_online_idle_unavailable_then_offline_then_back(client: TestClient) -> None:
    alice, alice_token, _, bob_token, _ = await setup_pair(client)
    alice_since = (await sync(client, alice_token))["next_batch"]
    # Alice is syncing: online, currently active.
    initial = await sync(client, bob_token, set_presence="offline")
    bob = Watcher(client, bob_token, alice, initial["next_batch"])
    [online] = [e["content"] for e in initial["presence"]["events"] if e["sender"] == alice]
    assert online["presence"] == "online" and online["currently_active"] is True
    assert set(online) == {"presence", "last_active_ago", "currently_active"}
    assert 0 <= online["last_active_ago"] < IDLE_MS

    # Alice's client keeps long-polling (present, but she does nothing).
    stop = asyncio.Event()

    async def alice_client() -> None:
        since = alice_since
        while not stop.is_set():
            since = (await sync(client, alice_token, since=since, timeout=200))["next_batch"]

    task = asyncio.create_task(alice_client())
    try:
        idle = await bob.next()
        assert idle["presence"] == "unavailable"
        assert idle["currently_active"] is False
        assert set(idle) == {"presence", "last_active_ago", "currently_active"}
        assert idle["last_active_ago"] >= IDLE_MS
        # Longer than the sync timeout, but a sync is always running or just ended.
        await asyncio.sleep(SYNC_MS / 1000 + 0.3)
        response = await client.get(f"{V3}/presence/{alice}/status", headers=auth(bob_token))
        still = await response.json()
        assert still["presence"] == "unavailable" and still["currently_active"] is False
        assert still["last_active_ago"] >= IDLE_MS + SYNC_MS
    finally:
        stop.set()
        await task
    gone = await bob.next()
    assert gone["presence"] == "offline"
    assert set(gone) == {"presence", "last_active_ago"}  # no currently_active when offline
    assert gone["last_active_ago"] >= IDLE_MS + 2 * SYNC_MS

    await sync(client, alice_token)
    back = await bob.next()
    assert back["presence"] == "online" and back["currently_active"] is True
    assert 0 <= back["last_active_ago"] < IDLE_MS


async def test_sending_an_event_is_activity(client: TestClient) -> None:
    alice, alice_token, _, bob_token, room_id = await setup_pair(client)
    since = (await sync(client, alice_token))["next_batch"]
    start = (await sync(client, bob_token, set_presence="offline"))["next_batch"]
    bob = Watcher(client, bob_token, alice, start)
    assert (await bob.next())["presence"] == "unavailable"
    # A sync (set_presence=online) alone does not end idleness...
    await sync(client, alice_token, since=since)
    assert client.server.app[PRESENCE].get(alice).state == "unavailable"
    # ...sending a message does.
    response = await client.put(
        f"{V3}/rooms/{room_id}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "back"},
        headers=auth(alice_token),
    )
    assert response.status == 200
    active = await bob.next()
    assert active["presence"] == "online" and active["currently_active"] is True
    assert active["last_active_ago"] < IDLE_MS


async def test_set_presence_offline_does_not_count_as_syncing(client: TestClient) -> None:
    carol, carol_token, _ = await make_user(client, "carol")  # never acted
    await sync(client, carol_token, set_presence="offline")
    assert client.server.app[PRESENCE].get(carol) is None
    await sync(client, carol_token, set_presence="unavailable")
    row = client.server.app[PRESENCE].get(carol)
    assert row is not None and row.state == "unavailable"


# -- the timer state machine with a fake clock ----------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, PresenceRow] = {}

    async def upsert(self, row: PresenceRow) -> None:
        self.rows[row.user_id] = row

    async def get_all(self) -> list[PresenceRow]:
        return list(self.rows.values())


class FakeRooms:
    async def get(self, user_id: str) -> frozenset[str]:
        return frozenset({"!room:hs"})

    async def hosts_in_room(self, room_id: str) -> set[str]:
        return {"hs", "remote.example"}


class FakeNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[str]]] = []

    def notify(self, stream: str, pos: int, users: Any = (), rooms: Any = ()) -> None:
        self.calls.append((stream, pos, list(users)))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    now = [1_000_000]
    monkeypatch.setattr(presence_mod, "_now_ms", lambda: now[0])
    return now


def make_service() -> tuple[PresenceService, FakeNotifier, list[tuple[str, dict, list[str]]]]:
    sent: list[tuple[str, dict, list[str]]] = []

    async def record(edu_type: str, content: dict, destinations: list[str]) -> None:
        sent.append((edu_type, content, destinations))

    notifier = FakeNotifier()
    service = PresenceService(
        FakeStore(),  # type: ignore[arg-type]
        FakeRooms(),  # type: ignore[arg-type]
        notifier,  # type: ignore[arg-type]
        EduOutbox(record, "hs"),
        "hs",
        idle_timeout_ms=300_000,
        sync_timeout_ms=30_000,
    )
    return service, notifier, sent


async def test_timers_with_fake_clock_send_edus(clock: list[int]) -> None:
    service, notifier, sent = make_service()
    async with service.syncing("@a:hs", "online"):
        clock[0] += 200_000  # a long sync: no offline timeout while it runs
        await service.tick()
        assert service.get("@a:hs").state == "online"  # type: ignore[union-attr]
    # One EDU when the sync started (none when it ended: nothing changed).
    assert sent == [
        (
            "m.presence",
            {
                "push": [
                    {
                        "user_id": "@a:hs",
                        "presence": "online",
                        "last_active_ago": 0,
                        "currently_active": True,
                    }
                ]
            },
            ["remote.example"],
        )
    ]
    clock[0] += 29_999  # 29.999 s after the sync ended: idle not yet (5 min), still here
    await service.tick()
    assert service.get("@a:hs").state == "online"  # type: ignore[union-attr]
    clock[0] += 1
    await service.tick()
    row = service.get("@a:hs")
    assert row is not None and row.state == "offline" and not row.currently_active
    assert notifier.calls[-1] == ("presence", row.stream_id, ["@a:hs"])
    assert sent[-1][1]["push"][0] == {
        "user_id": "@a:hs",
        "presence": "offline",
        "last_active_ago": 230_000,
        "currently_active": False,
    }
    count = len(sent)
    clock[0] += 3_600_000
    await service.tick()  # nothing left to do for an offline user
    assert len(sent) == count and len(service._timers) == 0


async def test_idle_while_syncing_and_action_resets(clock: list[int]) -> None:
    service, _, sent = make_service()
    async with service.syncing("@a:hs", "online"):
        clock[0] += 299_999
        await service.tick()
        assert service.get("@a:hs").state == "online"  # type: ignore[union-attr]
        clock[0] += 1
        await service.tick()
        row = service.get("@a:hs")
        assert row is not None and row.state == "unavailable"
        assert sent[-1][1]["push"][0]["presence"] == "unavailable"
        await service.bump_active("@a:hs")
        row = service.get("@a:hs")
        assert row is not None and row.state == "online" and row.currently_active
        assert row.last_active_ts == clock[0]
    # Remote users never time out here (their server tells us).
    await service.set_remote("@z:remote.example", "online")
    clock[0] += 10_000_000
    await service.tick()
    assert service.get("@z:remote.example").state == "online"  # type: ignore[union-attr]
    assert service.get("@a:hs").state == "offline"  # type: ignore[union-attr]


async def test_tick_work_is_bounded(clock: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    service, _, _ = make_service()
    monkeypatch.setattr(service, "MAX_PER_TICK", 3)
    for i in range(7):
        async with service.syncing(f"@u{i}:hs", "online"):
            pass
    clock[0] += 30_000
    await service.tick()
    offline = [i for i in range(7) if service.get(f"@u{i}:hs").state == "offline"]  # type: ignore[union-attr]
    assert len(offline) == 3 and service._wake.is_set()  # the rest: next tick, at once
    await service.tick()
    await service.tick()
    assert all(service.get(f"@u{i}:hs").state == "offline" for i in range(7))  # type: ignore[union-attr]


def test_deadline_queue_keeps_the_earliest_and_pops_only_due() -> None:
    queue = DeadlineQueue()
    assert queue.schedule("a", 100) and queue.schedule("b", 50)
    assert not queue.schedule("a", 150)  # later: ignored (owner re-evaluates at 100)
    assert queue.schedule("a", 40)  # earlier: replaces
    assert queue.next_deadline() == 40 and len(queue) == 2
    assert queue.pop_due(45, 10) == ["a"]
    assert queue.pop_due(49, 10) == []
    assert queue.pop_due(1000, 10) == ["b"]
    assert queue.next_deadline() is None and len(queue) == 0


async def test_a_workers_actions_are_reported_to_the_main_once_per_row(
    clock: list[int],
) -> None:
    """A worker (an event persister taking a message) does not change presence itself:
    the main alone numbers presence changes. It tells the main of an action when that
    changes the row it replicated, once per row (or again after REPORT_AGAIN_MS), and
    the main's idle timer counts from the reported action."""
    main, _, _ = make_service()
    worker, worker_notifier, worker_sent = make_service()
    reports: list[str] = []
    worker.forward_active = reports.append

    def replicate() -> None:
        row = main.get("@a:hs")
        assert row is not None
        worker.replicate(row, ["!room:hs"])

    async with main.syncing("@a:hs", "online"):
        replicate()
        clock[0] += 240_000  # four minutes of reading, then a message on the worker
        await worker.bump_active("@a:hs")
        await worker.bump_active("@a:hs")  # before the main's answer: not told again
        assert reports == ["@a:hs"]
        assert worker.get("@a:hs") == main.get("@a:hs")  # unchanged there
        assert worker_sent == [] and len(worker_notifier.calls) == 1  # the replication
        await main.bump_active(reports[-1])  # what /_replication/presence does
        replicate()
        await worker.bump_active("@a:hs")  # fresh row: nothing to tell
        assert reports == ["@a:hs"]
        clock[0] += 120_000  # six minutes after the sync began, two after the message
        await main.tick()
        assert main.get("@a:hs").state == "online"  # type: ignore[union-attr]
        clock[0] += 180_000  # five minutes after the message: idle
        await main.tick()
        assert main.get("@a:hs").state == "unavailable"  # type: ignore[union-attr]
        replicate()
        await worker.bump_active("@a:hs")
        assert reports == ["@a:hs"] * 2  # a new row: told at once
        clock[0] += presence_mod.REPORT_AGAIN_MS  # that report was lost: told again
        await worker.bump_active("@a:hs")
        assert reports == ["@a:hs"] * 3


async def test_a_process_not_writing_presence_hands_every_change_to_the_writer(
    clock: list[int],
) -> None:
    """With a presence writer elsewhere (`stream_writers: {presence: [...]}`, or the
    main), a process changes no row itself: a user's own change goes to the writer and
    its answer is adopted at once (read back here before the bus brings it; an older
    row never replaces a newer one), and another server's update is handed over as is.
    The wire format is what /_replication/presence carries (build.py)."""
    writer, _, writer_sent = make_service()
    other, other_notifier, other_sent = make_service()
    asked: list[dict[str, Any]] = []

    async def forward_set(body: dict[str, Any]) -> dict[str, Any] | None:
        asked.append(body)
        row = await writer.set_local(
            body["user_id"], body["set"], body["status_msg"], keep_msg=body["keep_msg"]
        )
        return asdict(row) if row is not None else None

    remote: list[dict[str, Any]] = []

    async def forward_remote(update: dict[str, Any]) -> None:
        remote.append(update)
        await writer.set_remote(**{k if k != "presence" else "state": v for k, v in update.items()})

    other.forward_set, other.forward_remote = forward_set, forward_remote
    row = await other.set_local("@a:hs", "unavailable", "lunch")
    assert asked == [
        {"user_id": "@a:hs", "set": "unavailable", "status_msg": "lunch", "keep_msg": False}
    ]
    assert row is not None and row == writer.get("@a:hs") == other.get("@a:hs")
    assert other_notifier.calls and other_notifier.calls[-1][1] == row.stream_id
    assert other_sent == [] and len(writer_sent) == 1  # the writer told the other servers
    newer = await writer.set_local("@a:hs", "online", "back")
    assert newer is not None
    other.replicate(newer, ["!room:hs"])  # the bus brought a newer row first
    await other.adopt(row)  # a late answer: ignored
    assert other.get("@a:hs") == newer

    await other.set_remote("@b:remote", "online", "hi", 5_000, True)
    assert remote == [
        {
            "user_id": "@b:remote",
            "presence": "online",
            "status_msg": "hi",
            "last_active_ago": 5_000,
            "currently_active": True,
        }
    ]
    assert other.get("@b:remote") is None  # not written here
    stored = writer.get("@b:remote")
    assert stored is not None and (stored.state, stored.status_msg) == ("online", "hi")
    assert row_from_json({"user_id": 1}) is None and row_from_json("x") is None
    assert row_from_json({**asdict(newer), "state": "away"}) is None
