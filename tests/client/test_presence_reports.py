"""A process serving /sync without writing presence tells the writer who syncs there
when that changes, not per /sync (replication/sync_reports.py, ephemeral/remote_syncs.py).

A reader's PresenceService and the writer's, on one fake clock, joined by the wire
format of /_replication/presence (JSON, build.py's handler): presence behaves as on
one process (online while syncing, offline SYNC_TIMEOUT after the last sync ended, back
online when a sync asks) while hundreds of back-to-back long-polls cost one report.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import homeserver.replication.sync_reports as reports_mod
from homeserver.ephemeral.remote_syncs import EXPIRE_MS, RemoteSyncs
from homeserver.replication.build import _sync_report
from homeserver.replication.sync_reports import LINGER_MS, SyncReporter
from tests.client.test_presence_timeouts import clock, make_service

__all__ = ["clock"]
ALICE = "@alice:hs"


@pytest.fixture
def pair(clock: list[int], monkeypatch: pytest.MonkeyPatch) -> Any:
    """(writer, reader, reporter, the bodies sent) on the fake clock."""
    monkeypatch.setattr(reports_mod, "_now_ms", lambda: clock[0])
    writer, _, _ = make_service()
    reader, _, _ = make_service()
    sent: list[dict[str, Any]] = []
    writers = [writer]  # the last one is the writer now (a test restarts it)

    async def send(body: dict[str, Any]) -> None:
        body = json.loads(json.dumps(body))  # what the writer's handler reads
        sent.append(body)
        await _sync_report(writers[-1], body["process"], body)

    reporter = SyncReporter("reader1", send, reader.touch_needed)
    reporter.writers = writers  # type: ignore[attr-defined]
    reader.forward_syncing = reporter
    return writer, reader, reporter, sent


def replicate(writer: Any, reader: Any) -> None:
    row = writer.get(ALICE)
    assert row is not None
    reader.replicate(row, ["!room:hs"])


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def long_poll(reader: Any, clock: list[int], ms: int) -> None:
    async with reader.syncing(ALICE, "online"):
        clock[0] += ms


def state(writer: Any) -> str:
    row = writer.get(ALICE)
    return "none" if row is None else row.state


async def test_back_to_back_long_polls_are_one_report_and_keep_the_user_online(
    clock: list[int], pair: Any
) -> None:
    writer, reader, reporter, sent = pair
    await long_poll(reader, clock, 10)
    await settle()
    assert sent == [{"process": "reader1", "syncing": {ALICE: "online"}}]
    assert state(writer) == "online"
    replicate(writer, reader)
    for _ in range(300):  # five minutes of 1 s long-polls (no action: idle, not offline)
        await long_poll(reader, clock, 1_000)
        await reporter.tick()
        await writer.tick()
    await settle()
    assert [b for b in sent if "snapshot" not in b] == sent[:1]  # nothing per /sync
    assert {b["snapshot"][ALICE] for b in sent[1:]} == {"online"}
    assert len(sent) - 1 == 30  # a heartbeat every SNAPSHOT_S
    assert state(writer) == "unavailable"  # idle for five minutes, but still here


async def test_the_writer_times_the_user_out_from_their_last_sync(
    clock: list[int], pair: Any
) -> None:
    writer, reader, reporter, sent = pair
    await long_poll(reader, clock, 10)
    await settle()
    last_sync_ended = clock[0]
    for _ in range(LINGER_MS // 1_000 + 1):
        clock[0] += 1_000
        await reporter.tick()
    assert {"process": "reader1", "stopped": {ALICE: LINGER_MS}} in sent
    clock[0] = last_sync_ended + writer.sync_timeout_ms - 1
    await writer.tick()
    assert state(writer) == "online"
    clock[0] += 1
    await writer.tick()
    assert state(writer) == "offline"


async def test_a_silent_process_is_forgotten_and_its_users_time_out(
    clock: list[int], pair: Any
) -> None:
    """A reader SIGKILLed while its user long-polls: its reports stop; the writer
    forgets it EXPIRE_MS after it was last heard, and the user goes offline then (their
    client is gone as far as anyone knows). Before, every sync's `started` without its
    `ended` kept the user syncing, and online, for good."""
    writer, reader, reporter, _ = pair
    sync = reader.syncing(ALICE, "online")
    await sync.__aenter__()  # never exits: the process dies during the long-poll
    await settle()
    await reporter.tick()  # the heartbeat
    heard = clock[0]
    clock[0] = heard + EXPIRE_MS - 1
    await writer.tick()
    assert state(writer) == "online"
    clock[0] = heard + max(EXPIRE_MS, writer.sync_timeout_ms)
    await writer.tick()
    await writer.tick()
    assert state(writer) == "offline"


async def test_a_sync_after_going_offline_brings_the_user_back(clock: list[int], pair: Any) -> None:
    """The user set themselves offline while a client kept syncing: as on one process,
    the client's next sync (set_presence=online) brings them online again, told to the
    writer because the row replicated here shows the change is needed."""
    writer, reader, _, sent = pair
    await long_poll(reader, clock, 10)
    await settle()
    replicate(writer, reader)
    await writer.set_local(ALICE, "offline")
    replicate(writer, reader)
    await long_poll(reader, clock, 10)
    await settle()
    assert [b.get("syncing") for b in sent] == [{ALICE: "online"}] * 2
    assert state(writer) == "online"


async def test_a_restarted_writer_learns_who_syncs_from_the_next_snapshot(
    clock: list[int], pair: Any
) -> None:
    """The writer restarts (its memory of other processes' syncs is gone; online users
    get one sync timeout to come back): the `resync` on the bus makes the reader send
    its whole set at its next tick, so a user long-polling all along never times out."""
    writer, reader, reporter, _ = pair
    await long_poll(reader, clock, 10)
    await settle()
    await reporter.tick()  # its heartbeat: the next is due in SNAPSHOT_S
    replicate(writer, reader)
    restarted, _, _ = make_service()
    restarted._store.rows = {ALICE: writer.get(ALICE)}  # what the old writer had written
    await restarted.load()
    assert restarted.get(ALICE) is not None
    reporter.writers.append(restarted)
    reporter.resync()
    await long_poll(reader, clock, 1_000)
    await reporter.tick()
    assert ALICE in restarted._remote_syncs  # at once, not at the next heartbeat
    for _ in range(120):  # two minutes of long-polls, the reader ticking every second
        await long_poll(reader, clock, 1_000)
        await reporter.tick()
        await restarted.tick()
    assert restarted.get(ALICE) is not None and restarted.get(ALICE).state == "online"


def test_remote_syncs_bookkeeping() -> None:
    syncs = RemoteSyncs()
    syncs.started("r1", ["@a:hs", "@b:hs"], 1_000)
    syncs.started("r2", ["@a:hs"], 1_000)
    assert syncs.stopped("r1", ["@a:hs"], 2_000) == []  # still syncing on r2
    assert "@a:hs" in syncs and "@b:hs" in syncs
    assert syncs.snapshot("r1", [], 3_000) == ["@b:hs"]  # a lost `stopped`
    assert syncs.expire(1_000 + EXPIRE_MS - 1) == []
    assert syncs.expire(1_000 + EXPIRE_MS) == [("@a:hs", 1_000)]  # r2 fell silent
    assert "@a:hs" not in syncs and syncs.next_expiry() == 3_000 + EXPIRE_MS


async def test_a_heartbeat_does_not_undo_a_change_made_after_the_last_sync(
    clock: list[int], pair: Any
) -> None:
    """A sync with set_presence=unavailable, then the user sets themselves online: the
    reader's next heartbeat still lists them (their sync ended under LINGER_MS ago)
    with "unavailable", and must not put them back (it did: the CI failure of
    test_workers_presence, when a heartbeat fell between the PUT and the check)."""
    writer, reader, reporter, sent = pair
    async with reader.syncing(ALICE, "unavailable"):
        clock[0] += 10
    await settle()
    assert state(writer) == "unavailable"
    await writer.set_local(ALICE, "online")
    replicate(writer, reader)
    clock[0] += 1_000
    await reporter.tick()
    assert sent[-1] == {"process": "reader1", "snapshot": {ALICE: "unavailable"}}
    assert state(writer) == "online"
    assert ALICE in writer._remote_syncs  # still counted as syncing there


async def test_a_lost_first_report_is_told_again_by_the_next_sync(
    clock: list[int], pair: Any
) -> None:
    """The report of a user's first sync is lost (the writer unreachable): the snapshot
    does not apply set_presence, so the next sync must, seeing the row replicated at
    the reader still offline."""
    writer, reader, reporter, sent = pair
    await writer.set_local(ALICE, "offline")
    replicate(writer, reader)
    writers = reporter.writers
    lost: list[dict[str, Any]] = []

    class Unreachable:
        async def remote_started(self, process: str, users: dict[str, str]) -> None:
            lost.append(users)

    writers.append(Unreachable())
    await long_poll(reader, clock, 10)
    await settle()
    assert lost == [{ALICE: "online"}]
    writers.pop()
    await long_poll(reader, clock, 10)
    await settle()
    assert state(writer) == "online"
