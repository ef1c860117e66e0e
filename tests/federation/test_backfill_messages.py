"""/messages on a server that joined late reaches history from before it joined.

Two of our servers on loopback: Alice's room on A has messages before Bob (on B) joins;
B holds only the state from send_join, so paginating backwards must backfill from A.
"""

from __future__ import annotations


def _texts(chunk: list[dict]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


async def test_history_before_join_is_backfilled_into_messages(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice, name="Old history")
    sent = [await a.send_text(alice, room_id, f"m{i}") for i in range(6)]
    await b.join(bob, room_id, [a.name])

    # Page through B's /messages backwards, 4 at a time, until the start of the room.
    chunks: list[dict] = []
    token = None
    for _ in range(10):
        params = {"dir": "b", "limit": "4"}
        if token:
            params["from"] = token
        page = await b.ok("GET", f"/rooms/{room_id}/messages", bob, **params)
        chunks.extend(page["chunk"])
        token = page.get("end")
        if token is None:
            break
    assert token is None, "pagination never reached the start of the room"

    assert _texts(chunks) == ["m5", "m4", "m3", "m2", "m1", "m0"]
    ids = [e["event_id"] for e in chunks]
    assert [i for i in ids if i in sent] == list(reversed(sent))
    assert len(ids) == len(set(ids)), "pages overlap"
    # The whole room back to its create event, newest first, as A has it.
    assert chunks[0]["type"] == "m.room.member" and chunks[0]["state_key"] == bob
    assert chunks[-1]["type"] == "m.room.create"
    on_a = await a.ok("GET", f"/rooms/{room_id}/messages", alice, dir="b", limit="100")
    assert ids == [e["event_id"] for e in on_a["chunk"]]
    # Backfilled events read like any other: content, sender, single-event lookup.
    old = await b.ok("GET", f"/rooms/{room_id}/event/{sent[0]}", bob)
    assert old["content"] == {"msgtype": "m.text", "body": "m0"} and old["sender"] == alice
    # A second walk is served locally and gives the same answer.
    again = await b.ok("GET", f"/rooms/{room_id}/messages", bob, dir="b", limit="100")
    assert [e["event_id"] for e in again["chunk"]] == ids
    assert "end" not in again


async def test_local_room_without_remote_servers_does_not_backfill(pair) -> None:
    a, _ = pair
    alice = await a.register("alice")
    room_id = await a.create_room(alice)
    await a.send_text(alice, room_id, "only")
    page = await a.ok("GET", f"/rooms/{room_id}/messages", alice, dir="b", limit="50")
    assert _texts(page["chunk"]) == ["only"]
    assert page["chunk"][-1]["type"] == "m.room.create"
    assert "end" not in page
