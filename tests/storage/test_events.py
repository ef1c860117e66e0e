"""EventStore contract: persistence, graph, timeline, flags, relations, redactions."""

from __future__ import annotations

import json

import pytest

from homeserver.storage import EventStore, PersistItem, StorageError, Stores

from .conftest import ROOM, make_event, member

pytestmark = pytest.mark.usefixtures("stores")


async def _room(stores: Stores, room_id: str = ROOM, version: str = "10") -> None:
    await stores.rooms.store_room(room_id, version, "@alice:example.org")


async def _chain(
    stores: Stores, n: int, *, room_id: str = ROOM, start: int = 0, prev: str | None = None
) -> list[str]:
    """Persist n messages, one batch each, linked by prev_events; return their IDs."""
    ids = []
    for i in range(start, start + n):
        eid = f"$m{i}-{room_id[1:5]}"
        ev = make_event(
            eid,
            room_id=room_id,
            prev=[prev] if prev else [],
            depth=i + 1,
            content={"body": f"m{i}"},
        )
        await stores.events.persist_events(room_id, [PersistItem(ev)], new_extremities=[eid])
        ids.append(eid)
        prev = eid
    return ids


async def test_pdu_round_trips_exactly(stores: Stores) -> None:
    await _room(stores)
    content = {
        "body": "héllo 🌍 \u202e \u0000 \ud800 ascii",
        "big": 2**63 + 12345,
        "neg": -(2**70),
        "float_like": 1.5,
        "nested": {"z": [1, {"y": None}], "a": True},
    }
    ev = make_event(
        "$rt", content=content, unsigned={"age_ts": 5}, prev=["$p"], auth=["$a1", "$a2"]
    )
    original = json.loads(json.dumps(ev.pdu))
    [so] = await stores.events.persist_events(ROOM, [PersistItem(ev)])
    assert so == 1
    fresh = EventStore(stores.db)  # no cache: read back from the database
    got = await fresh.get_event("$rt")
    assert got is not None
    assert got.pdu == original
    assert list(got.pdu) == list(original)  # key order kept too
    assert got.pdu["content"]["big"] == 2**63 + 12345
    assert got.event_id == "$rt" and got.room_version.identifier == "10"
    assert got.rejected_reason is None
    assert await fresh.get_event("$missing") is None


async def test_stream_orderings_and_lookups(stores: Stores) -> None:
    await _room(stores)
    assert await stores.events.get_current_stream_position() == 0
    ids = await _chain(stores, 3)
    batch = [make_event("$b1", prev=[ids[-1]], depth=4), make_event("$b2", prev=["$b1"], depth=5)]
    orderings = await stores.events.persist_events(ROOM, [PersistItem(e) for e in batch])
    assert orderings == [4, 5]
    assert await stores.events.get_current_stream_position() == 5
    assert await stores.events.get_stream_ordering("$b1") == 4
    assert await stores.events.get_stream_ordering("$nope") is None
    assert await stores.events.have_events(["$b1", "$nope", ids[0]]) == {"$b1", ids[0]}
    got = await stores.events.get_events(["$b2", "$nope", ids[1]])
    assert set(got) == {"$b2", ids[1]} and got["$b2"].pdu["prev_events"] == ["$b1"]
    assert await stores.events.get_max_depth(["$b1", "$b2", "$nope"]) == 5
    assert await stores.events.get_max_depth(["$nope"]) == 0
    # Persisting the same event again is a no-op returning its ordering.
    assert await stores.events.persist_events(ROOM, [PersistItem(batch[0])]) == [4]
    assert await stores.events.get_current_stream_position() == 5


async def test_graph_edges_and_auth_chain(stores: Stores) -> None:
    await _room(stores)
    create = make_event(
        "$create", "m.room.create", state_key="", content={"creator": "@alice:example.org"}
    )
    join = member(
        "$join", "@alice:example.org", "join", prev=["$create"], auth=["$create"], depth=2
    )
    pl = make_event(
        "$pl",
        "m.room.power_levels",
        state_key="",
        prev=["$join"],
        auth=["$create", "$join"],
        depth=3,
    )
    msg = make_event("$msg", prev=["$pl", "$join"], auth=["$create", "$join", "$pl"], depth=4)
    await stores.events.persist_events(ROOM, [PersistItem(e) for e in (create, join, pl, msg)])
    assert await stores.events.get_prev_events("$msg") == ["$pl", "$join"]
    assert await stores.events.get_auth_event_ids("$msg") == ["$create", "$join", "$pl"]
    assert await stores.events.get_prev_events("$unknown") == []
    assert await stores.events.get_auth_chain_ids(["$msg"]) == {"$create", "$join", "$pl"}
    assert await stores.events.get_auth_chain_ids(["$pl"]) == {"$create", "$join"}
    assert await stores.events.get_auth_chain_ids([]) == set()
    children = await stores.db.fetch(
        "SELECT event_id FROM event_edges WHERE prev_event_id = $1 ORDER BY event_id", "$join"
    )
    assert [r[0] for r in children] == ["$msg", "$pl"]


async def test_forward_extremities(stores: Stores) -> None:
    await _room(stores)
    await stores.events.persist_events(
        ROOM,
        [PersistItem(make_event("$a")), PersistItem(make_event("$b"))],
        new_extremities=["$a", "$b"],
    )
    assert await stores.events.get_forward_extremities(ROOM) == ["$a", "$b"]
    await stores.events.persist_events(
        ROOM, [PersistItem(make_event("$c", prev=["$a", "$b"]))], new_extremities=["$c"]
    )
    assert await stores.events.get_forward_extremities(ROOM) == ["$c"]
    await stores.events.update_forward_extremities(ROOM, add=["$d", "$e"], remove=["$c"])
    assert await stores.events.get_forward_extremities(ROOM) == ["$d", "$e"]
    await stores.events.update_forward_extremities(ROOM, add=["$d"], remove=[])
    assert await stores.events.get_forward_extremities(ROOM) == ["$d", "$e"]
    # Without new_extremities, persisting leaves them alone.
    await stores.events.persist_events(ROOM, [PersistItem(make_event("$f"))])
    assert await stores.events.get_forward_extremities(ROOM) == ["$d", "$e"]
    assert await stores.events.get_forward_extremities("!other:x") == []


async def test_batch_is_atomic(stores: Stores) -> None:
    await _room(stores)
    await stores.events.persist_events(
        ROOM, [PersistItem(make_event("$ok"))], new_extremities=["$ok"]
    )
    good = make_event("$good1", prev=["$ok"])
    good2 = make_event("$good2", prev=["$good1"])
    bad = make_event("$bad", prev=["$good2"])
    items = [PersistItem(good), PersistItem(good2), PersistItem(bad, state_group=987654)]
    with pytest.raises(StorageError):
        await stores.events.persist_events(
            ROOM,
            items,
            new_extremities=["$bad"],
            current_state_delta=([], {("m.room.topic", ""): "$good1"}),
        )
    assert await stores.events.have_events(["$good1", "$good2", "$bad"]) == set()
    assert await stores.events.get_current_stream_position() == 1
    assert await stores.events.get_forward_extremities(ROOM) == ["$ok"]
    assert await stores.current_state.get_current_state_ids(ROOM) == {}
    edges = await stores.db.fetchval(
        "SELECT COUNT(*) FROM event_edges WHERE event_id LIKE '$good%'"
    )
    assert edges == 0

    # A delta naming an event that does not exist also aborts the whole batch.
    with pytest.raises(StorageError, match="unknown event"):
        await stores.events.persist_events(
            ROOM,
            [PersistItem(good)],
            current_state_delta=([], {("m.room.member", "@x:y"): "$ghost"}),
        )
    assert await stores.events.have_events(["$good1"]) == set()

    # The same batch without the fault goes through, with the next orderings.
    items[2].state_group = None
    assert await stores.events.persist_events(ROOM, items) == [2, 3, 4]


async def test_unknown_room_and_wrong_room_are_refused(stores: Stores) -> None:
    with pytest.raises(StorageError, match="unknown room"):
        await stores.events.persist_events(ROOM, [PersistItem(make_event("$x"))])
    await _room(stores)
    with pytest.raises(StorageError, match="not"):
        await stores.events.persist_events(ROOM, [PersistItem(make_event("$y", room_id="!o:x"))])


async def test_timeline_reads_skip_outliers_rejected_and_soft_failed(stores: Stores) -> None:
    await _room(stores)
    items = [
        PersistItem(make_event("$t1")),
        PersistItem(make_event("$out"), outlier=True),
        PersistItem(make_event("$rej"), rejected_reason="auth_error"),
        PersistItem(make_event("$soft"), soft_failed=True),
        PersistItem(make_event("$t2")),
        PersistItem(make_event("$t3")),
    ]
    assert await stores.events.persist_events(ROOM, items) == [1, 2, 3, 4, 5, 6]
    fwd = await stores.events.get_room_events_between(ROOM, 0, None, 10, "f")
    assert [(t.stream_ordering, t.event.event_id) for t in fwd] == [
        (1, "$t1"),
        (5, "$t2"),
        (6, "$t3"),
    ]
    assert [
        t.event.event_id for t in await stores.events.get_room_events_between(ROOM, 1, 5, 10, "f")
    ] == ["$t2"]
    back = await stores.events.get_room_events_between(ROOM, 6, None, 2, "b")
    assert [t.event.event_id for t in back] == ["$t3", "$t2"]
    back2 = await stores.events.get_room_events_between(ROOM, 5, 0, 10, "b")
    assert [t.event.event_id for t in back2] == ["$t2", "$t1"]
    with pytest.raises(ValueError):
        await stores.events.get_room_events_between(ROOM, 0, None, 1, "x")  # type: ignore[arg-type]

    assert await stores.events.get_rejected("$rej") == "auth_error"
    assert await stores.events.get_rejected("$t1") is None
    assert (await stores.events.get_event("$rej")).rejected_reason == "auth_error"
    assert await stores.events.is_soft_failed("$soft") is True
    assert await stores.events.is_soft_failed("$t1") is False
    assert await stores.events.is_outlier("$out") is True
    fresh = EventStore(stores.db)
    assert (await fresh.get_event("$rej")).rejected_reason == "auth_error"
    assert await fresh.is_soft_failed("$soft") and await fresh.is_outlier("$out")
    # All of them are still "had" (the graph needs them).
    assert await stores.events.have_events(["$out", "$rej", "$soft"]) == {"$out", "$rej", "$soft"}


async def test_read_stream_is_what_a_follower_takes_in(stores: Stores) -> None:
    """A worker following another process's writes (replication/follower.py) reads
    accepted events, outliers included (flagged), in stream order, in one query that
    also fills the cache: a process that never saw the events (a fresh EventStore) gets
    them exactly as stored, and what the cache held is reused, not parsed again."""
    await _room(stores)
    other = "!other:example.org"
    await _room(stores, other)
    items = [
        PersistItem(make_event("$t1", content={"body": "one"})),
        PersistItem(make_event("$out"), outlier=True),
        PersistItem(make_event("$rej"), rejected_reason="auth_error"),
        PersistItem(make_event("$soft"), soft_failed=True),
        PersistItem(make_event("$t2")),
    ]
    assert await stores.events.persist_events(ROOM, items) == [1, 2, 3, 4, 5]
    [six] = await stores.events.persist_events(
        other, [PersistItem(make_event("$x1", room_id=other))]
    )
    fresh = EventStore(stores.db)
    read = await fresh.read_stream(0, six, 10)
    assert [(e.event_id, so, outlier) for e, so, outlier in read] == [
        ("$t1", 1, False),
        ("$out", 2, True),
        ("$t2", 5, False),
        ("$x1", 6, False),
    ]
    assert read[0][0].pdu == (await stores.events.get_event("$t1")).pdu
    assert read[0][0].content == {"body": "one"}
    # Bounds: (since, upto], at most `limit`.
    assert [so for _, so, _ in await fresh.read_stream(1, 5, 10)] == [2, 5]
    assert [so for _, so, _ in await fresh.read_stream(0, 6, 2)] == [1, 2]
    assert await fresh.read_stream(6, 10, 10) == []
    # Cached by the read: later lookups hand back the same objects.
    got = await fresh.get_events(["$t1", "$x1"])
    assert got["$t1"] is read[0][0] and got["$x1"] is read[3][0]
    assert (await fresh.read_stream(0, 1, 10))[0][0] is read[0][0]


async def test_events_after_across_rooms(stores: Stores) -> None:
    other = "!other:example.org"
    await _room(stores)
    await _room(stores, other)
    a = await _chain(stores, 3)
    b = await _chain(stores, 2, room_id=other)
    await _chain(stores, 1, room_id=ROOM, start=10)  # ordering 6
    after = await stores.events.get_events_after(1, [ROOM, other], 10)
    assert [t.stream_ordering for t in after] == [2, 3, 4, 5, 6]
    assert [t.event.event_id for t in after[:4]] == [a[1], a[2], b[0], b[1]]
    assert [t.stream_ordering for t in await stores.events.get_events_after(1, [other], 10)] == [
        4,
        5,
    ]
    assert [
        t.stream_ordering for t in await stores.events.get_events_after(0, [ROOM, other], 2)
    ] == [1, 2]
    assert await stores.events.get_events_after(6, [ROOM, other], 10) == []
    assert await stores.events.get_events_after(0, [], 10) == []


async def test_outlier_promotion_and_backfill(stores: Stores) -> None:
    await _room(stores)
    await _chain(stores, 2)  # orderings 1, 2
    await stores.events.persist_events(ROOM, [PersistItem(make_event("$late"), outlier=True)])
    assert await stores.events.get_stream_ordering("$late") == 3
    assert await stores.events.get_events_after(2, [ROOM], 10) == []
    [so] = await stores.events.persist_events(
        ROOM, [PersistItem(make_event("$late"), state_group=None)]
    )
    assert so == 4
    assert not await stores.events.is_outlier("$late")
    assert [t.event.event_id for t in await stores.events.get_events_after(2, [ROOM], 10)] == [
        "$late"
    ]

    old = [make_event("$old1", depth=0), make_event("$old2", depth=0)]
    orderings = await stores.events.persist_events(
        ROOM, [PersistItem(e) for e in old], backfilled=True
    )
    assert orderings == [-1, -2]
    assert await stores.events.get_current_stream_position() == 4
    assert [t.event.event_id for t in await stores.events.get_events_after(0, [ROOM], 10)] == [
        "$m0-room",
        "$m1-room",
        "$late",
    ]
    back = await stores.events.get_room_events_between(ROOM, 4, None, 10, "b")
    assert [t.event.event_id for t in back] == ["$late", "$m1-room", "$m0-room", "$old1", "$old2"]


@pytest.mark.parametrize("size", [3, 400])
async def test_a_request_past_the_one_query_bound_reads_the_same(stores: Stores, size: int) -> None:
    """The reads before a write (rooms known, events stored, the stream's end) are one
    query for a short request and chunked ones past MAX_IN_LIST ids: both keep stored
    events' orderings, promote an outlier, number new events after the end, and count
    backfill down from the lowest."""
    await _room(stores)
    first = [make_event(f"$a{i}") for i in range(size)]
    assert await stores.events.persist_events(ROOM, [PersistItem(e) for e in first]) == list(
        range(1, size + 1)
    )
    await stores.events.persist_events(ROOM, [PersistItem(make_event("$out"), outlier=True)])
    again = [*first, make_event("$out"), *(make_event(f"$b{i}") for i in range(size))]
    orderings = await stores.events.persist_events(ROOM, [PersistItem(e) for e in again])
    assert orderings == [*range(1, size + 1), *range(size + 2, 2 * size + 3)]
    assert not await stores.events.is_outlier("$out")
    old = [make_event(f"$old{i}", depth=0) for i in range(size)]
    back = await stores.events.persist_events(ROOM, [PersistItem(e) for e in old], backfilled=True)
    assert back == list(range(-1, -size - 1, -1))
    more = [make_event(f"$older{i}", depth=0) for i in range(2)]
    back = await stores.events.persist_events(ROOM, [PersistItem(e) for e in more], backfilled=True)
    assert back == [-size - 1, -size - 2]


async def test_relations(stores: Stores) -> None:
    await _room(stores)
    target = make_event("$target")
    thread = make_event(
        "$th", content={"m.relates_to": {"rel_type": "m.thread", "event_id": "$target"}}
    )
    react = make_event(
        "$re",
        "m.reaction",
        content={"m.relates_to": {"rel_type": "m.annotation", "event_id": "$target", "key": "👍"}},
    )
    edit = make_event(
        "$ed", content={"m.relates_to": {"rel_type": "m.replace", "event_id": "$target"}}
    )
    reply = make_event("$rp", content={"m.relates_to": {"m.in_reply_to": {"event_id": "$target"}}})
    junk = make_event("$junk", content={"m.relates_to": "nope"})
    await stores.events.persist_events(
        ROOM, [PersistItem(e) for e in (target, thread, react, edit, reply, junk)]
    )
    assert await stores.events.get_relations("$target") == [
        ("$th", "m.thread", None),
        ("$re", "m.annotation", "👍"),
        ("$ed", "m.replace", None),
    ]
    assert await stores.events.get_relations("$target", "m.annotation") == [
        ("$re", "m.annotation", "👍")
    ]
    assert await stores.events.get_relations("$target", limit=1) == [("$th", "m.thread", None)]
    assert await stores.events.get_relations("$th") == []


async def test_redaction_is_recorded_not_applied(stores: Stores) -> None:
    await _room(stores)
    ev = make_event("$secret", content={"body": "oops", "msgtype": "m.text"})
    red = make_event("$red", "m.room.redaction", content={"redacts": "$secret"}, redacts="$secret")
    await stores.events.persist_events(ROOM, [PersistItem(ev), PersistItem(red)])
    assert (await stores.events.get_event("$secret", redact_if_needed=True)).content[
        "body"
    ] == "oops"
    assert await stores.events.get_redacted_because(["$secret"]) == {}
    assert await stores.events.mark_redacted("$secret", "$red") is True
    assert await stores.events.mark_redacted("$nothing", "$red") is False
    for store in (stores.events, EventStore(stores.db)):  # cached and fresh
        assert await store.get_redacted_because(["$secret", "$red"]) == {"$secret": "$red"}
        assert (await store.get_event("$secret")).content["body"] == "oops"
        pruned = await store.get_event("$secret", redact_if_needed=True)
        assert pruned.content == {} and pruned.event_id == "$secret"
        assert pruned.pdu["sender"] == "@alice:example.org"


async def test_event_cache_serves_repeat_reads(stores: Stores) -> None:
    await _room(stores)
    await stores.events.persist_events(ROOM, [PersistItem(make_event("$c1"))])
    first = await stores.events.get_event("$c1")
    assert await stores.events.get_event("$c1") is first
    fresh = EventStore(stores.db, cache_size=2)
    a = await fresh.get_event("$c1")
    assert a is not first and a == first
    assert await fresh.get_event("$c1") is a
