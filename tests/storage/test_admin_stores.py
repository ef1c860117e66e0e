"""Contract tests of the admin area's stores, on every backend (SQLite and PostgreSQL):
the same answers, the same orders (NULLs included), the same purges."""

from __future__ import annotations

from typing import Any

from homeserver.storage import Database, PersistItem, Stores
from homeserver.storage.admin_jobs import AdminJobStore
from homeserver.storage.admin_rooms import AdminRoomStore, RoomFilter
from homeserver.storage.admin_users import AdminUserStore, RateLimitOverride, UserFilter
from homeserver.storage.destinations import DestinationStore
from homeserver.storage.reports import AdminReportStore, ReportStore
from homeserver.storage.room_purge import RoomPurgeStore
from homeserver.storage.schema import dependency_order

from .conftest import make_event, member

SERVER = "example.org"
ALICE, BOB, EVE = "@alice:example.org", "@bob:example.org", "@eve:remote.test"


async def make_room(
    stores: Stores, room_id: str, name: str | None, members: list[str]
) -> list[str]:
    """A room with a create event, the members joined and an optional name; returns
    the event IDs in order."""
    await stores.rooms.store_room(room_id, "10", members[0])
    tag = room_id.strip("!").split(":")[0]
    events = [
        make_event(f"$c{tag}", "m.room.create", room_id=room_id, state_key="", sender=members[0])
    ]
    events += [member(f"$m{tag}{i}", u, "join", room_id=room_id) for i, u in enumerate(members)]
    if name is not None:
        events.append(
            make_event(
                f"$n{tag}", "m.room.name", room_id=room_id, state_key="", content={"name": name}
            )
        )
    events += [
        make_event(f"$t{tag}{i}", room_id=room_id, content={"body": str(i)}) for i in range(3)
    ]
    delta = {(e.type, e.state_key): e.event_id for e in events if e.state_key is not None}
    group = await stores.state.store_state_group(room_id, None, {}, delta)
    await stores.events.persist_events(
        room_id,
        [PersistItem(e, state_group=group) for e in events],
        new_extremities=[events[-1].event_id],
        current_state_delta=([], delta),
    )
    return [e.event_id for e in events]


async def test_schema_is_described_alike_on_every_backend(db: Database) -> None:
    tables = {t.name: t for t in await db.describe_schema()}
    assert {"events", "users", "room_stats", "admin_jobs", "state_group_entries"} <= set(tables)
    assert "sqlite_sequence" not in tables
    entries = tables["state_group_entries"]
    assert entries.primary_key == ("state_group", "type", "state_key")
    assert {fk.ref_table for fk in entries.foreign_keys} == {"state_groups"}
    order = [t.name for t in dependency_order(tables.values())]
    assert order.index("state_groups") < order.index("state_group_entries")
    assert order.index("users") < order.index("devices")


async def test_user_list_filters_orders_and_flags(db: Database, stores: Stores) -> None:
    users = AdminUserStore(db)
    for i, (name, display) in enumerate([("carl", "Zed"), ("anna", None), ("bert", "Alpha")]):
        await stores.accounts.create_user(
            f"@{name}:x", None, created_ts=100 - i, displayname=display
        )
    await stores.accounts.create_user("@guest:x", None, is_guest=True, created_ts=5)
    await stores.accounts.set_displayname("@anna:x", None)
    page, total = await users.list_users(0, 10, UserFilter(), "displayname")
    # NULL display names sort last on both backends (and first when descending).
    assert [u.name for u in page] == ["@bert:x", "@carl:x", "@anna:x", "@guest:x"] and total == 4
    page, _ = await users.list_users(0, 10, UserFilter(), "displayname", descending=True)
    assert page[0].name == "@anna:x"
    page, total = await users.list_users(1, 2, UserFilter(guests=False), "creation_ts")
    assert [u.name for u in page] == ["@anna:x", "@carl:x"] and total == 3
    page, _ = await users.list_users(0, 10, UserFilter(name="ALP"), "name")
    assert [u.name for u in page] == ["@bert:x"]
    page, _ = await users.list_users(0, 10, UserFilter(name="_"), "name")  # literal, not LIKE's
    assert page == []

    assert await users.set_flag("@carl:x", "shadow_banned", True)
    assert await users.set_flag("@carl:x", "locked", True)
    assert not await users.set_flag("@nobody:x", "locked", True)
    assert (await users.flagged_users())["shadow_banned"] == {"@carl:x"}
    page, total = await users.list_users(0, 10, UserFilter(), "name")
    assert "@carl:x" not in [u.name for u in page]  # locked users hidden unless asked
    page, _ = await users.list_users(
        0, 10, UserFilter(locked=True), "shadow_banned", descending=True
    )
    assert page[0].name == "@carl:x" and page[0].shadow_banned and page[0].locked

    await stores.accounts.upsert_device("@anna:x", "D1")
    await stores.accounts.update_device_last_seen("@anna:x", "D1", 777, "1.2.3.4")
    details = await users.get_user("@anna:x")
    assert details is not None and details.last_seen_ts == 777
    page, _ = await users.list_users(0, 1, UserFilter(locked=True), "last_seen_ts", descending=True)
    # NULLs first when descending, as in every other order.
    assert page[0].last_seen_ts is None

    await users.set_ratelimit_override("@anna:x", RateLimitOverride(3, 7))
    await users.set_ratelimit_override("@anna:x", RateLimitOverride(0, 0))
    assert await users.get_ratelimit_override("@anna:x") == RateLimitOverride(0, 0)
    assert await users.all_ratelimit_overrides() == {"@anna:x": RateLimitOverride(0, 0)}
    assert await users.delete_ratelimit_override("@anna:x")
    assert await users.get_ratelimit_override("@anna:x") is None


async def test_room_stats_list_and_blocks(db: Database, stores: Stores) -> None:
    rooms = AdminRoomStore(db, SERVER)
    await make_room(stores, "!big:example.org", "Big", [ALICE, BOB, EVE])
    await make_room(stores, "!small:example.org", "small", [ALICE])
    await make_room(stores, "!noname:example.org", None, [BOB])
    assert sorted(await rooms.rooms_without_stats()) == [
        "!big:example.org",
        "!noname:example.org",
        "!small:example.org",
    ]
    head = await stores.events.get_current_stream_position()
    changed = await rooms.rooms_with_state_changes(0, head)
    await rooms.refresh_room_stats(changed, head)
    assert await rooms.stats_position() == head
    assert await rooms.rooms_without_stats() == []

    page, total = await rooms.list_rooms(0, 10, RoomFilter(), "joined_members")
    # Ties (one member each) go by room ID in the same direction, as in Synapse.
    assert [r.room_id for r in page] == [
        "!big:example.org",
        "!small:example.org",
        "!noname:example.org",
    ]
    big = page[0]
    assert (big.joined_members, big.joined_local_members, big.name) == (3, 2, "Big")
    assert big.state_events == 5 and total == 3
    page, _ = await rooms.list_rooms(0, 10, RoomFilter(), "name")
    assert [r.name for r in page] == ["Big", "small", None]
    page, _ = await rooms.list_rooms(0, 10, RoomFilter(), "name", reverse=True)
    assert [r.name for r in page] == [None, "small", "Big"]
    page, total = await rooms.list_rooms(0, 10, RoomFilter(search_term="SMA"), "name")
    assert [r.room_id for r in page] == ["!small:example.org"] and total == 1
    page, total = await rooms.list_rooms(1, 1, RoomFilter(), "name")
    assert [r.name for r in page] == ["small"] and total == 3

    await rooms.block_room("!big:example.org", ALICE)
    await rooms.block_room("!big:example.org", BOB)  # first block wins
    block = await rooms.get_block("!big:example.org")
    assert block is not None and block.user_id == ALICE
    assert await rooms.blocked_room_ids() == {"!big:example.org"}
    assert await rooms.unblock_room("!big:example.org")
    assert await rooms.get_block("!big:example.org") is None

    extremities = await rooms.forward_extremities("!big:example.org")
    assert [x.event_id for x in extremities] == ["$tbig2"]
    assert extremities[0].state_group is not None


async def test_purge_room_removes_every_row_of_the_room(db: Database, stores: Stores) -> None:
    rooms = AdminRoomStore(db, SERVER)
    doomed = await make_room(stores, "!doomed:example.org", "Doomed", [ALICE, BOB])
    kept = await make_room(stores, "!kept:example.org", "Kept", [ALICE])
    await rooms.block_room("!doomed:example.org", ALICE)
    await ReportStore(db).add_report(
        "event", BOB, room_id="!doomed:example.org", event_id=doomed[-1]
    )
    await stores.transactions.enqueue_pdus(["remote.test"], doomed[-1])
    await stores.transactions.enqueue_pdus(["remote.test"], kept[-1])

    result = await RoomPurgeStore(db).purge_room("!doomed:example.org")
    assert set(result.event_ids) == set(doomed)
    assert result.member_ids == {ALICE, BOB}
    for table in ("events", "current_state", "room_memberships", "state_groups", "rooms"):
        assert (
            await db.fetchval(
                f"SELECT COUNT(*) FROM {table} WHERE room_id = $1", "!doomed:example.org"
            )
            == 0
        ), table
    marks = ", ".join(f"${i}" for i in range(1, len(doomed) + 1))
    for table in ("event_edges", "event_to_state_groups", "event_relations"):
        count = await db.fetchval(
            f"SELECT COUNT(*) FROM {table} WHERE event_id IN ({marks})", *doomed
        )
        assert count == 0, table
    assert await db.fetchval("SELECT COUNT(*) FROM state_group_entries") == 3  # kept's only
    outbox = await stores.transactions.peek("remote.test")
    assert outbox.pdu_event_ids == [kept[-1]]
    # Kept: the other room, the block and the report.
    assert await stores.events.get_event(kept[-1]) is not None
    assert await rooms.get_block("!doomed:example.org") is not None
    assert await db.fetchval("SELECT COUNT(*) FROM content_reports") == 1


async def test_purge_history_keeps_state_extremities_and_local_events(
    db: Database, stores: Stores
) -> None:
    ids = await make_room(stores, "!h:example.org", None, [EVE, ALICE])
    remote_msgs = []
    for i in range(4):
        ev = make_event(f"$r{i}", room_id="!h:example.org", sender=EVE, content={"body": f"r{i}"})
        remote_msgs.append(ev.event_id)
        await stores.events.persist_events(
            "!h:example.org", [PersistItem(ev)], new_extremities=[ev.event_id]
        )
    last = await stores.events.get_stream_ordering(remote_msgs[-1])
    assert last is not None
    # Unread counts of folded push actions (push_retention.py): those covering only
    # purged history go; a newer one, or another room's, stays.
    for room_id, upto in (("!h:example.org", last), ("!h:example.org", last + 5), ("!o:x", 1)):
        await db.execute(
            "INSERT INTO push_summaries VALUES ($1, $2, $3, 1, 0, $4)",
            ALICE,
            room_id,
            f"t{upto}",
            upto,
        )
    result = await RoomPurgeStore(db).purge_history("!h:example.org", last + 1, local_server=SERVER)
    kept = await db.fetch("SELECT room_id, upto_so FROM push_summaries ORDER BY upto_so")
    assert sorted((r[0], int(r[1])) for r in kept) == [("!h:example.org", last + 5), ("!o:x", 1)]
    # Eve's (remote) messages go, except the forward extremity.
    assert remote_msgs[-1] not in result.event_ids
    assert set(remote_msgs[:-1]) <= set(result.event_ids)
    for event_id in remote_msgs[:-1]:  # (callers drop the event cache; see RoomShutdown)
        assert await db.fetchval("SELECT 1 FROM events WHERE event_id = $1", event_id) is None
    # Local messages (alice's, from make_room) stay; state stays whole.
    assert [e for e in ids if e.startswith("$t")] == [
        e for e in ids if e.startswith("$t") and e not in result.event_ids
    ]
    state = await stores.current_state.get_current_state_ids("!h:example.org")
    for event_id in state.values():
        assert await db.fetchval("SELECT 1 FROM events WHERE event_id = $1", event_id)
    assert ids


async def test_destinations_and_deliveries(db: Database, stores: Stores) -> None:
    dests = DestinationStore(db)
    ids = await make_room(stores, "!f:example.org", None, [ALICE, EVE])
    await stores.transactions.enqueue_pdus(["remote.test"], ids[-1])
    batch = await stores.transactions.peek("remote.test")
    await stores.transactions.ack_delivery("remote.test", batch.up_to_id, batch.pdu_event_ids, 1234)
    await stores.transactions.set_retry_state("dead.test", 10, 20, 600_000)
    page, total = await dests.list_destinations(0, 10)
    assert [d.destination for d in page] == ["dead.test", "remote.test"] and total == 2
    remote = page[1]
    assert (
        remote.last_success_ts == 1234 and remote.failure_ts is None and remote.retry_interval == 0
    )
    ordering = await stores.events.get_stream_ordering(ids[-1])
    assert remote.last_successful_stream_ordering == ordering
    assert page[0].failure_ts == 10 and page[0].retry_interval == 600_000
    page, _ = await dests.list_destinations(0, 10, order_by="failure_ts", descending=True)
    assert [d.destination for d in page] == ["remote.test", "dead.test"]  # NULL first
    rooms, total = await dests.destination_rooms("remote.test", 0, 10)
    assert rooms == [("!f:example.org", ordering)] and total == 1
    # An older delivery never moves a room's position backwards.
    await stores.transactions.ack_delivery("remote.test", 0, [ids[0]], 2000)
    rooms, _ = await dests.destination_rooms("remote.test", 0, 10)
    assert rooms == [("!f:example.org", ordering)]
    assert await stores.transactions.peek("remote.test") == batch.__class__()


async def test_reports_and_jobs(db: Database, stores: Stores) -> None:
    reports, admin_reports = ReportStore(db), AdminReportStore(db)
    ids = await make_room(stores, "!r:example.org", None, [ALICE, EVE])
    for i in range(3):
        await reports.add_report(
            "event", BOB, room_id="!r:example.org", event_id=ids[-1], reason=str(i)
        )
    await reports.add_report("user", BOB, target_user_id=EVE, reason="rude")
    page, total = await admin_reports.list_event_reports(
        0, 2, newest_first=True, event_sender=ALICE
    )
    assert total == 3 and [r.reason for r in page] == ["2", "1"]
    detail = await admin_reports.get_event_report(page[0].id)
    assert detail is not None and detail.sender == ALICE and detail.event_json is not None
    assert await admin_reports.get_event_report(99) is None
    users, total = await admin_reports.list_user_reports(0, 10, newest_first=False)
    assert total == 1 and users[0].target_user_id == EVE
    assert await admin_reports.delete_report(users[0].id, "event") is False  # wrong kind
    assert await admin_reports.delete_report(users[0].id, "user") is True

    jobs = AdminJobStore(db)
    await jobs.add("j1", "purge_history", "!r:example.org", {"x": 1})
    await jobs.add("j2", "shutdown_and_purge_room", "!r:example.org", {})
    await jobs.update("j1", "complete", result={"purged_events": 3})
    job = await jobs.get("j1")
    assert job is not None and job.status == "complete" and job.result == {"purged_events": 3}
    assert [j.job_id for j in await jobs.find(status="scheduled")] == ["j2"]
    assert await jobs.fail_interrupted("restart") == 1
    found: list[Any] = await jobs.find(action="shutdown_and_purge_room")
    assert found[0].status == "failed" and found[0].error == "restart"
