"""Two and three of our own servers federating over loopback, driven by the client API.

Proves the outbound and inbound halves together: join through another server
(make_join / send_join), messages both ways seen by /sync, invites to remote users,
concurrent state changes resolved the same everywhere, and a server that was down
catching up (the other side's durable outbox plus get_missing_events).
"""

from __future__ import annotations

import asyncio

import pytest

from homeserver.appstate import STORES
from homeserver.storage.transactions import DOWN_CACHE_S
from tests.federation.multiserver import LoopbackServer, eventually


@pytest.fixture
def servers(loopback):
    """`await servers(n)`: n of our servers ("a", "b", "c"), stopped by `loopback`."""

    async def start(n: int) -> list[LoopbackServer]:
        return [await loopback(label) for label in "abc"[:n]]

    return start


async def _texts(server: LoopbackServer, user: str, room_id: str) -> list[str]:
    return await server.sync_texts(user, room_id)


async def _joined_pair(servers) -> tuple[LoopbackServer, LoopbackServer, str, str, str]:
    a, b = await servers(2)
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice, name="Federated")
    assert await b.join(bob, room_id, [a.name]) == room_id
    return a, b, alice, bob, room_id


async def test_join_through_another_server_and_chat_both_ways(servers) -> None:
    a, b, alice, bob, room_id = await _joined_pair(servers)

    # B got the room's state through send_join: the name and both members.
    status, name = await b.state(bob, room_id, "m.room.name")
    assert status == 200 and name == {"name": "Federated"}
    # A learned of Bob's join (the resident server persisted it in send_join).
    members = await a.ok("GET", f"/rooms/{room_id}/joined_members", alice)
    assert set(members["joined"]) == {alice, bob}

    await a.send_text(alice, room_id, "hello from A")
    await b.send_text(bob, room_id, "hello from B")

    async def both_see_both(server: LoopbackServer, user: str) -> bool:
        texts = await _texts(server, user, room_id)
        return {"hello from A", "hello from B"} <= set(texts)

    assert await eventually(lambda: both_see_both(a, alice))
    assert await eventually(lambda: both_see_both(b, bob))


async def test_invite_to_a_remote_user_then_accept(servers) -> None:
    a, b = await servers(2)
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice, preset="private_chat")
    await a.ok("POST", f"/rooms/{room_id}/invite", alice, {"user_id": bob})

    async def invited() -> dict | None:
        data = await b.sync(bob)
        return data.get("rooms", {}).get("invite", {}).get(room_id)

    invite = await eventually(invited)
    # The room state crossed federation as full PDUs; bob's client gets it stripped.
    events = invite["invite_state"]["events"]
    create = next(e for e in events if e["type"] == "m.room.create")
    assert create["sender"] == alice and "hashes" not in create and "auth_events" not in create
    assert await b.join(bob, room_id, [a.name]) == room_id
    await b.send_text(bob, room_id, "thanks for the invite")

    async def alice_sees() -> bool:
        return "thanks for the invite" in await _texts(a, alice, room_id)

    assert await eventually(alice_sees)


async def test_concurrent_state_changes_converge(servers) -> None:
    a, b, alice, bob, room_id = await _joined_pair(servers)
    # Give Bob the power to change the topic (power levels: 50 needed for state).
    status, levels = await a.state(alice, room_id, "m.room.power_levels")
    assert status == 200
    levels["users"][bob] = 100
    await a.put_state(alice, room_id, "m.room.power_levels", levels)

    async def bob_has_power() -> bool:
        status, pl = await b.state(bob, room_id, "m.room.power_levels")
        return status == 200 and pl.get("users", {}).get(bob) == 100

    assert await eventually(bob_has_power)

    # Both change the topic at once: each builds on its own tips, so the DAG forks.
    await _both(
        a.put_state(alice, room_id, "m.room.topic", {"topic": "from A"}),
        b.put_state(bob, room_id, "m.room.topic", {"topic": "from B"}),
    )

    # A message on each side merges the forks (its prev_events cite both tips).
    async def topics() -> tuple[str, str] | None:
        sa, ta = await a.state(alice, room_id, "m.room.topic")
        sb, tb = await b.state(bob, room_id, "m.room.topic")
        if sa == sb == 200 and ta == tb:
            return ta["topic"], tb["topic"]
        return None

    await a.send_text(alice, room_id, "merge A")
    await b.send_text(bob, room_id, "merge B")
    agreed = await eventually(topics)
    assert agreed[0] in ("from A", "from B")


async def test_three_servers_share_a_room(servers) -> None:
    a, b, c = await servers(3)
    alice = await a.register("alice")
    bob = await b.register("bob")
    carol = await c.register("carol")
    room_id = await a.create_room(alice)
    await b.join(bob, room_id, [a.name])
    await c.join(carol, room_id, [b.name, a.name])
    await c.send_text(carol, room_id, "carol here")

    for server, user in ((a, alice), (b, bob)):

        async def sees(server=server, user=user) -> bool:
            return "carol here" in await _texts(server, user, room_id)

        assert await eventually(sees)


async def test_server_restarted_mid_conversation_catches_up(servers) -> None:
    a, b, alice, bob, room_id = await _joined_pair(servers)
    admin = await a.register_admin("admin")
    await a.send_text(alice, room_id, "before")

    async def b_has(text: str) -> bool:
        return text in await _texts(b, bob, room_id)

    assert await eventually(lambda: b_has("before"))

    await b.stop()
    # A accepts messages while B is down: they wait in A's durable outbox, and A's
    # operator sees it backing off from B.
    for i in range(3):
        await a.send_text(alice, room_id, f"while down {i}")

    async def a_backing_off() -> bool:
        status, row = await a.admin(admin, "GET", f"/v1/federation/destinations/{b.name}")
        return status == 200 and row["failure_ts"] is not None

    assert await eventually(a_backing_off)

    await b.start()
    for i in range(3):
        assert await eventually(lambda i=i: b_has(f"while down {i}"), timeout=20)
    # And the conversation goes on both ways.
    await b.send_text(bob, room_id, "back again")

    async def a_has_back() -> bool:
        return "back again" in await _texts(a, alice, room_id)

    assert await eventually(a_has_back)


async def _both(x, y) -> None:
    await asyncio.gather(x, y)


async def test_gap_is_filled_with_get_missing_events(servers) -> None:
    """Events B never got (A's outbox for B lost) are fetched when the next one arrives."""
    a, b, alice, bob, room_id = await _joined_pair(servers)
    await b.stop()
    for i in range(3):
        await a.send_text(alice, room_id, f"lost {i}")
    outbox = a.app[STORES].transactions
    batch = await outbox.peek(b.name)
    assert batch.pdu_event_ids
    await outbox.ack(b.name, 2**62)  # as if those transactions were gone for good
    await outbox.clear_retry_state(b.name)
    await b.start()
    await a.send_text(alice, room_id, "after the gap")

    async def b_has_all() -> bool:
        texts = await _texts(b, bob, room_id)
        return {"lost 0", "lost 1", "lost 2", "after the gap"} <= set(texts)

    assert await eventually(b_has_all, timeout=20)


async def test_a_server_down_for_long_catches_up_from_the_newest_event(servers) -> None:
    """While B is down, A queues nothing more for it but the room's newest event
    (federation_catchup); back up, B gets that event, fetches the gap from A (more
    than get_missing_events brings at once) and its users read every message."""
    a, b, alice, bob, room_id = await _joined_pair(servers)
    await a.send_text(alice, room_id, "before")
    assert await eventually(lambda: _has(b, bob, room_id, "before"))
    await b.stop()
    await a.send_text(alice, room_id, "down 0")
    outbox = a.app[STORES].transactions

    async def a_backing_off() -> bool:
        state = await outbox.get_retry_state(b.name)
        return state is not None and state.failure_ts is not None

    assert await eventually(a_backing_off)
    # The process writing the room may be another than the one sending (a deployment):
    # it sees the failure within DOWN_CACHE_S.
    await asyncio.sleep(DOWN_CACHE_S + 0.2)
    sent = ["down 0"] + [f"down {i}" for i in range(1, 16)]
    for text in sent[1:]:
        await a.send_text(alice, room_id, text)
    db = a.app[STORES].db
    queued = await db.fetchval(
        "SELECT COUNT(*) FROM federation_outbox WHERE destination = $1 AND event_id IS NOT NULL",
        b.name,
    )
    assert queued <= 1  # "down 0", if it was queued before the failure was recorded
    rows = await db.fetch("SELECT room_id FROM federation_catchup WHERE destination = $1", b.name)
    assert [r[0] for r in rows] == [room_id]

    await b.start()

    async def b_reads_everything() -> bool:
        page = await b.ok("GET", f"/rooms/{room_id}/messages", bob, dir="b", limit="100")
        texts = [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
        return set(sent) <= set(texts)

    assert await eventually(b_reads_everything, timeout=30)
    assert await db.fetchval("SELECT COUNT(*) FROM federation_catchup") == 0


async def _has(server: LoopbackServer, user: str, room_id: str, text: str) -> bool:
    return text in await _texts(server, user, room_id)
