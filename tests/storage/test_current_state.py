"""CurrentStateStore contract: current state and memberships follow persist_events."""

from __future__ import annotations

from homeserver.storage import PersistItem, Stores

from .conftest import ROOM, make_event, member

ALICE, BOB, CAROL = "@alice:example.org", "@bob:remote.test", "@carol:other.test:8448"


async def test_membership_lifecycle(stores: Stores) -> None:
    await stores.rooms.store_room(ROOM, "10", ALICE)
    create = make_event("$create", "m.room.create", state_key="", sender=ALICE)
    j_alice = member("$ja", ALICE, "join")
    inv_bob = member("$ib", BOB, "invite", sender=ALICE)
    orderings = await stores.events.persist_events(
        ROOM,
        [PersistItem(create), PersistItem(j_alice), PersistItem(inv_bob)],
        current_state_delta=(
            [],
            {
                ("m.room.create", ""): "$create",
                ("m.room.member", ALICE): "$ja",
                ("m.room.member", BOB): "$ib",
            },
        ),
    )
    cs = stores.current_state
    assert await cs.get_current_state_ids(ROOM) == {
        ("m.room.create", ""): "$create",
        ("m.room.member", ALICE): "$ja",
        ("m.room.member", BOB): "$ib",
    }
    assert await cs.get_current_state_ids(ROOM, types=["m.room.create"]) == {
        ("m.room.create", ""): "$create"
    }
    assert await cs.get_current_state_ids(ROOM, types=[]) == {}
    assert await cs.get_current_state_event_id(ROOM, "m.room.member", BOB) == "$ib"
    assert await cs.get_current_state_event_id(ROOM, "m.room.name") is None
    assert await cs.get_members(ROOM) == {ALICE: "join", BOB: "invite"}
    assert await cs.get_users_in_room(ROOM) == [ALICE]
    # The room summary's members: cached, and re-read after each change below.
    assert await cs.get_summary_members([ROOM, "!none:example.org"]) == {
        ROOM: ((ALICE,), (BOB,)),
        "!none:example.org": ((), ()),
    }
    assert await cs.get_rooms_for_user(BOB) == []
    assert await cs.get_rooms_for_user(BOB, ("invite",)) == [ROOM]
    info = await cs.get_membership_info(ROOM, BOB)
    assert (info.membership, info.event_id, info.stream_ordering) == ("invite", "$ib", orderings[2])

    # Bob joins (event persisted in this batch), Carol joins from a third server.
    j_bob = member("$jb", BOB, "join")
    j_carol = member("$jc", CAROL, "join")
    await stores.events.persist_events(
        ROOM,
        [PersistItem(j_bob), PersistItem(j_carol)],
        current_state_delta=([], {("m.room.member", BOB): "$jb", ("m.room.member", CAROL): "$jc"}),
    )
    assert await cs.get_users_in_room(ROOM) == [ALICE, BOB, CAROL]
    assert await cs.get_summary_members([ROOM]) == {ROOM: ((ALICE, BOB, CAROL), ())}
    assert await cs.get_joined_hosts(ROOM) == {"example.org", "remote.test", "other.test:8448"}
    assert await cs.get_joined_member_count(ROOM) == 3
    assert await cs.get_membership(ROOM, BOB) == "join"
    assert await cs.get_rooms_for_user(BOB) == [ROOM]

    # Bob leaves; a state delta can also name an event persisted earlier.
    leave = member("$lb", BOB, "leave")
    await stores.events.persist_events(ROOM, [PersistItem(leave)])
    await stores.events.persist_events(
        ROOM,
        [PersistItem(make_event("$name", "m.room.name", state_key="", content={"name": "N"}))],
        current_state_delta=([], {("m.room.member", BOB): "$lb", ("m.room.name", ""): "$name"}),
    )
    assert await cs.get_membership(ROOM, BOB) == "leave"
    assert await cs.get_joined_hosts(ROOM) == {"example.org", "other.test:8448"}
    assert await cs.get_rooms_for_user(BOB, ("leave", "ban")) == [ROOM]
    assert [m.membership for m in await cs.get_memberships_for_user(BOB)] == ["leave"]
    assert await cs.get_summary_members([ROOM]) == {ROOM: ((ALICE, CAROL), ())}

    # State resolution dropped Carol's key: both the state entry and the row go.
    await stores.events.persist_events(
        ROOM, [], current_state_delta=([("m.room.member", CAROL), ("m.room.name", "")], {})
    )
    assert await cs.get_members(ROOM) == {ALICE: "join", BOB: "leave"}
    assert await cs.get_summary_members([ROOM]) == {ROOM: ((ALICE,), ())}
    assert ("m.room.name", "") not in await cs.get_current_state_ids(ROOM)
    assert await cs.get_membership(ROOM, CAROL) is None


async def test_out_of_band_invite_updates_membership_only(stores: Stores) -> None:
    remote_room = "!far:remote.test"
    await stores.rooms.store_room(remote_room, "10")
    invite = member("$inv", ALICE, "invite", sender=BOB, room_id=remote_room)
    await stores.events.persist_events(
        remote_room, [PersistItem(invite, outlier=True)], out_of_band_memberships=["$inv"]
    )
    assert await stores.current_state.get_rooms_for_user(ALICE, ("invite",)) == [remote_room]
    assert await stores.current_state.get_current_state_ids(remote_room) == {}


async def test_rooms_for_user_across_rooms(stores: Stores) -> None:
    rooms = [f"!r{i}:example.org" for i in range(3)]
    for i, room in enumerate(rooms):
        await stores.rooms.store_room(room, "10")
        membership = "join" if i != 1 else "invite"
        ev = member(f"$m{i}", ALICE, membership, room_id=room)
        await stores.events.persist_events(
            room,
            [PersistItem(ev)],
            current_state_delta=([], {("m.room.member", ALICE): ev.event_id}),
        )
    assert await stores.current_state.get_rooms_for_user(ALICE) == [rooms[0], rooms[2]]
    assert await stores.current_state.get_rooms_for_user(ALICE, ("join", "invite")) == rooms
    assert await stores.current_state.get_rooms_for_user(ALICE, ()) == []


async def test_state_and_member_maps_are_cached_until_the_state_changes(stores: Stores) -> None:
    """Sliding sync reads a room's whole state and member maps per answer: they are
    read once, then served from memory until a state event (not only a membership)
    or a membership changes the room."""
    await stores.rooms.store_room(ROOM, "10", ALICE)
    create = make_event("$create", "m.room.create", state_key="", sender=ALICE)
    await stores.events.persist_events(
        ROOM,
        [PersistItem(create), PersistItem(member("$ja", ALICE, "join"))],
        current_state_delta=(
            [],
            {("m.room.create", ""): "$create", ("m.room.member", ALICE): "$ja"},
        ),
    )
    cs = stores.current_state
    reads: list[str] = []
    stores.db.observer = lambda kind, waited, took: reads.append(kind)

    async def maps() -> tuple[dict, dict]:
        states = await cs.get_current_state_ids_for_rooms([ROOM])
        members = await cs.get_members_for_rooms([ROOM])
        return states[ROOM], members[ROOM]

    first = await maps()
    assert first == (
        {("m.room.create", ""): "$create", ("m.room.member", ALICE): "$ja"},
        {ALICE: "join"},
    )
    assert reads.count("read") == 2
    assert await maps() == first and reads.count("read") == 2  # from memory

    # A name: no membership changed, the state map did.
    name = make_event("$name", "m.room.name", state_key="", sender=ALICE, content={"name": "N"})
    await stores.events.persist_events(
        ROOM, [PersistItem(name)], current_state_delta=([], {("m.room.name", ""): "$name"})
    )
    states, members = await maps()
    assert states[("m.room.name", "")] == "$name" and members == {ALICE: "join"}
    # A message changes no state: still from memory.
    reads.clear()
    text = make_event("$text", "m.room.message", sender=ALICE, content={"body": "hi"})
    await stores.events.persist_events(ROOM, [PersistItem(text)])
    reads.clear()
    assert await maps() == (states, members) and reads.count("read") == 0
    # Bob joins: both maps again.
    await stores.events.persist_events(
        ROOM,
        [PersistItem(member("$jb", BOB, "join"))],
        current_state_delta=([], {("m.room.member", BOB): "$jb"}),
    )
    states, members = await maps()
    assert states[("m.room.member", BOB)] == "$jb" and members == {ALICE: "join", BOB: "join"}
