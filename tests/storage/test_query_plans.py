"""Hot-path reads (send, sync, auth, federation) must be index lookups, never table scans.

Every statement run during a realistic send/sync scenario is captured with SQLite's
trace hook and EXPLAIN QUERY PLAN'd; a `SCAN <table>` step on a real table fails the test.
"""

from __future__ import annotations

import re
import sqlite3

import pytest

from homeserver.storage import PersistItem, Stores
from homeserver.storage.sqlite import SQLiteDatabase

from .conftest import ROOM, make_event, member

ALICE = "@alice:example.org"
# Statements that run rarely (startup, admin, maintenance), allowed to scan.
NOT_HOT = (
    "sqlite_master",
    "schema_version",
    "SELECT DISTINCT destination",
    "FROM destination_retry",
    "LIKE",
    "_fts_config",  # FTS5 reading its own one-row configuration table
)


async def _scenario(stores: Stores) -> None:
    ev, st, cs, acc, tx = (
        stores.events,
        stores.state,
        stores.current_state,
        stores.accounts,
        stores.transactions,
    )
    await stores.rooms.store_room(ROOM, "10", ALICE)
    await acc.create_user(ALICE, "h")
    await acc.upsert_device(ALICE, "D")
    await acc.add_access_token("tok", ALICE, "D")
    g1 = await st.store_state_group(ROOM, None, {("m.room.create", ""): "$create"})
    g2 = await st.store_state_group(ROOM, g1, {("m.room.member", ALICE): "$join"})
    create = make_event("$create", "m.room.create", state_key="")
    join = member("$join", ALICE, "join", prev=["$create"], auth=["$create"])
    await ev.persist_events(
        ROOM,
        [PersistItem(create, state_group=g1), PersistItem(join, state_group=g2)],
        new_extremities=["$join"],
        current_state_delta=(
            [],
            {("m.room.create", ""): "$create", ("m.room.member", ALICE): "$join"},
        ),
    )
    await stores.db.fetch("SELECT 1")  # fresh caches below: every read hits the database
    fresh = type(stores)(
        stores.db,
        *(type(s)(stores.db) for s in (ev, stores.rooms, st, cs, acc, stores.server_keys, tx)),
        stores.retention,
    )
    ev, st, cs, acc, tx = (
        fresh.events,
        fresh.state,
        fresh.current_state,
        fresh.accounts,
        fresh.transactions,
    )

    # The send path.
    await acc.get_token("tok")
    await tx.get_client_txn(ALICE, "D", "t1")
    await fresh.rooms.get_room_version(ROOM)
    extremities = await ev.get_forward_extremities(ROOM)
    await ev.get_max_depth(extremities)
    groups = await st.get_state_groups_for_events(extremities)
    await st.get_state_group_for_event("$join")
    state = await st.get_state_ids(groups["$join"])
    await ev.get_events(state.values())
    await cs.get_current_state_ids(ROOM)
    await cs.get_current_state_event_id(ROOM, "m.room.power_levels")
    await cs.get_membership(ROOM, ALICE)
    await cs.get_membership_info(ROOM, ALICE)
    g3 = await st.store_state_group(ROOM, groups["$join"], {("m.room.topic", ""): "$msg"})
    msg = make_event(
        "$msg",
        prev=extremities,
        auth=["$create", "$join"],
        depth=3,
        content={"m.relates_to": {"rel_type": "m.thread", "event_id": "$join"}},
    )
    await ev.persist_events(ROOM, [PersistItem(msg, state_group=g3)], new_extremities=["$msg"])
    await tx.set_client_txn(ALICE, "D", "t1", "$msg")
    hosts = await cs.get_joined_hosts(ROOM)
    await tx.enqueue_pdus(sorted(hosts), "$msg")
    await ev.have_events(["$msg", "$other"])
    await ev.get_stream_ordering("$msg")
    await ev.get_auth_chain_ids(["$msg"])
    await ev.get_rejected("$msg")
    await ev.get_relations("$join")
    await ev.mark_redacted("$msg", "$red")
    await ev.get_redacted_because(["$msg"])

    # The sync path.
    await ev.get_current_stream_position()
    rooms = await cs.get_rooms_for_user(ALICE)
    await cs.get_memberships_for_user(ALICE, ("invite", "leave"))
    await ev.get_events_after(0, rooms, 10)
    await ev.read_stream(0, 10, 10)  # a worker following the event stream
    await ev.get_room_events_between(ROOM, 10, 0, 10, "b")
    await ev.get_room_events_between(ROOM, 0, 10, 10, "f")
    await cs.get_users_in_room(ROOM)
    await cs.get_summary_members([ROOM])
    await cs.get_members(ROOM)
    await cs.get_joined_member_count(ROOM)

    # Federation.
    batch = await tx.peek("example.org")
    await tx.ack("example.org", batch.up_to_id)
    await tx.get_inbound_txn("remote.test", "txn")
    await tx.set_inbound_txn("remote.test", "txn", {})
    await fresh.server_keys.get_server_keys("remote.test", ["ed25519:a"])
    await tx.get_retry_state("remote.test")
    await fresh.rooms.get_alias("#a:example.org")


async def test_hot_path_statements_use_indexes(stores: Stores, tmp_path) -> None:
    db = stores.db
    if not isinstance(db, SQLiteDatabase):
        pytest.skip("query plans are checked on SQLite")
    seen: list[str] = []
    await db.set_trace_callback(seen.append)
    try:
        await _scenario(stores)
    finally:
        await db.set_trace_callback(None)

    statements = {s.strip() for s in seen}
    checked = 0
    scans: list[str] = []
    plan_conn = sqlite3.connect(db.path)
    try:
        for sql in sorted(statements):
            if not re.match(r"(?is)^\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", sql):
                continue
            if any(marker in sql for marker in NOT_HOT):
                continue
            plan = plan_conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            checked += 1
            for row in plan:
                detail = row[-1]
                m = re.match(r"SCAN (\w+)", detail)
                if (
                    m
                    and m.group(1) not in ("CONSTANT", "chain")
                    and "CONSTANT ROWS" not in detail  # a multi-row INSERT's VALUES
                    and "COVERING INDEX" not in detail
                ):
                    scans.append(f"{detail}  <-  {sql[:160]}")
    finally:
        plan_conn.close()
    assert checked > 40
    assert scans == []
