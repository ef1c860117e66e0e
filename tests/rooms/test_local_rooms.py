"""The room service end to end on real storage: create, send, state, membership."""

from __future__ import annotations

import pytest

from homeserver.errors import MatrixError
from homeserver.events.hashing import check_content_hash
from homeserver.events.signing import get_verify_key, verify_event_signature
from homeserver.rooms.creation import RoomSpec

ALICE = "@alice:test.local"
BOB = "@bob:test.local"

VERSIONS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_create_room_then_chat(kit, version: str) -> None:
    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version=version, preset="public_chat", name="Lobby"), {}
    )
    state = await kit.stores.current_state.get_current_state_ids(room_id)
    assert set(state) >= {
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
    }
    create = await kit.stores.events.get_event(state[("m.room.create", "")])
    assert create.content["room_version"] == version
    if version == "12":
        assert room_id == "!" + create.event_id[1:]
        assert "room_id" not in create.pdu
    else:
        assert room_id.endswith(":test.local")

    # Bob joins the public room, both chat.
    await kit.membership.join(room_id, BOB)
    assert await kit.stores.current_state.get_membership(room_id, BOB) == "join"
    msg = await kit.events.send(room_id, BOB, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    assert check_content_hash(msg.pdu)
    assert msg.prev_event_ids == [
        (await kit.stores.current_state.get_current_state_ids(room_id))[("m.room.member", BOB)]
    ]
    assert await kit.stores.events.get_forward_extremities(room_id) == [msg.event_id]
    # The persisted event reads back identical and announced once, after the commit.
    stored = await kit.stores.events.get_event(msg.event_id)
    assert stored.pdu == msg.pdu
    assert kit.seen[-1][1].event_id == msg.event_id
    orderings = [s for s, _ in kit.seen]
    assert orderings == sorted(orderings)


async def test_event_is_signed_with_our_key(kit) -> None:
    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version="10", preset="private_chat"), {}
    )
    msg = await kit.events.send(
        room_id, ALICE, "m.room.message", {"body": "x", "msgtype": "m.text"}
    )
    key = get_verify_key(kit.events._signing_key)
    assert verify_event_signature(msg.pdu, msg.room_version, "test.local", key)


async def test_non_member_cannot_send(kit) -> None:
    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version="11", preset="private_chat"), {}
    )
    with pytest.raises(MatrixError) as err:
        await kit.events.send(room_id, BOB, "m.room.message", {"body": "x", "msgtype": "m.text"})
    assert err.value.errcode == "M_FORBIDDEN"
    # An invite-only room refuses Bob's join, and nothing was written.
    before = await kit.stores.events.get_forward_extremities(room_id)
    with pytest.raises(MatrixError):
        await kit.membership.join(room_id, BOB)
    assert await kit.stores.events.get_forward_extremities(room_id) == before


async def test_invite_then_join_and_kick(kit) -> None:
    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version="12", preset="private_chat"), {}
    )
    await kit.membership.set_membership(room_id, ALICE, BOB, "invite")
    assert await kit.stores.current_state.get_membership(room_id, BOB) == "invite"
    await kit.membership.join(room_id, BOB)
    assert await kit.stores.current_state.get_membership(room_id, BOB) == "join"
    await kit.membership.set_membership(room_id, ALICE, BOB, "leave", reason="bye")
    assert await kit.stores.current_state.get_membership(room_id, BOB) == "leave"
    with pytest.raises(MatrixError):
        await kit.events.send(room_id, BOB, "m.room.message", {"body": "x", "msgtype": "m.text"})


async def test_txn_idempotency(kit) -> None:
    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version="12", preset="private_chat"), {}
    )
    content = {"body": "once", "msgtype": "m.text"}
    a = await kit.events.send(room_id, ALICE, "m.room.message", content, txn=(ALICE, "DEV", "t1"))
    b = await kit.events.send(room_id, ALICE, "m.room.message", content, txn=(ALICE, "DEV", "t1"))
    c = await kit.events.send(room_id, ALICE, "m.room.message", content, txn=(ALICE, "DEV2", "t1"))
    assert a.event_id == b.event_id != c.event_id


async def test_state_shares_groups(kit) -> None:
    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version="12", preset="public_chat"), {}
    )
    for i in range(5):
        await kit.events.send(
            room_id, ALICE, "m.room.message", {"body": str(i), "msgtype": "m.text"}
        )
    ext = await kit.stores.events.get_forward_extremities(room_id)
    groups = await kit.stores.state.get_state_groups_for_events(ext)
    # Messages reuse the state group of the state event before them.
    name_ev = await kit.events.send(room_id, ALICE, "m.room.topic", {"topic": "t"}, "")
    g_topic = await kit.stores.state.get_state_group_for_event(name_ev.event_id)
    assert g_topic != groups[ext[0]]
    state = await kit.stores.state.get_state_ids(g_topic)
    assert state[("m.room.topic", "")] == name_ev.event_id


async def test_concurrent_messages_form_one_chain(kit) -> None:
    """A burst of sends is batched: every event durable, chained, none lost or doubled."""
    import asyncio

    room_id = await kit.creator.create_room(
        ALICE, RoomSpec(room_version="12", preset="public_chat"), {}
    )
    await kit.membership.join(room_id, BOB)
    sends = [
        kit.events.send(
            room_id,
            ALICE if i % 2 else BOB,
            "m.room.message",
            {"body": str(i), "msgtype": "m.text"},
            txn=(ALICE if i % 2 else BOB, "D", f"t{i % 40}"),
        )
        for i in range(60)
    ]
    events = await asyncio.gather(*sends)
    # Requests 40..59 repeat the txn IDs of 0..19 (same user): same event back.
    for i in range(40, 60):
        assert events[i].event_id == events[i - 40].event_id
    unique = {e.event_id: e for e in events}
    assert len(unique) == 40
    # They form a single chain: exactly one extremity, each event's prev is another's id
    # or the tip before the burst.
    ext = await kit.stores.events.get_forward_extremities(room_id)
    assert len(ext) == 1 and ext[0] in unique
    heads = [e for e in unique.values() if e.prev_event_ids[0] not in unique]
    assert len(heads) == 1
    stored = await kit.stores.events.get_events(list(unique))
    assert set(stored) == set(unique)
    for e in unique.values():
        assert (
            await kit.stores.transactions.get_client_txn(
                e.sender,
                "D",
                next(t for (u, d, t), eid in kit.events._recent_txns.items() if eid == e.event_id),
            )
            == e.event_id
        )


async def test_identical_concurrent_creates_get_distinct_v12_rooms(kit) -> None:
    """Same user, same content, same millisecond: v12 room IDs are content hashes, so
    the server must make the create events differ rather than merge the rooms."""
    import asyncio

    kit.events._clock = lambda: 1_800_000_000.0  # a frozen clock: every event same ms
    specs = [RoomSpec(room_version="12", preset="private_chat") for _ in range(5)]
    rooms = await asyncio.gather(*(kit.creator.create_room(ALICE, s, {}) for s in specs))
    assert len(set(rooms)) == 5
    for room_id in rooms:
        members = await kit.stores.current_state.get_members(room_id)
        assert members == {ALICE: "join"}
