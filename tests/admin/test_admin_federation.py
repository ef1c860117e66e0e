"""Federation destinations in the admin API, on a real two-server loopback federation:
a destination appears once the sender delivered to it (with the rooms it shares),
shows its backoff while it is down, and reset_connection makes the sender retry at
once instead of waiting out the backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.federation.multiserver import SLOW_BACKOFF, LoopbackServer, eventually, started


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    a = LoopbackServer(tmp_path, "a", federation=SLOW_BACKOFF)
    b = LoopbackServer(tmp_path, "b")
    async with started(a, b) as pair:
        yield pair


async def admin_call(server: LoopbackServer, admin: str, method: str, path: str) -> tuple[int, Any]:
    return await server.admin(admin, method, path, {})


async def test_destinations_retry_state_rooms_and_reset(pair: Any) -> None:
    a, b = pair
    admin = await a.register_admin("admin")
    bob = await b.register("bob")
    room_id = await a.create_room(admin)
    await b.join(bob, room_id, [a.name])
    await a.send_text(admin, room_id, "hello b")
    assert await eventually(lambda: _has_text(b, bob, room_id, "hello b"))

    async def delivered() -> dict[str, Any] | None:
        status, body = await admin_call(a, admin, "GET", "/v1/federation/destinations")
        rows = [d for d in body["destinations"] if d["destination"] == b.name]
        return rows[0] if rows and rows[0]["last_successful_stream_ordering"] else None

    row = await eventually(delivered)
    assert row["failure_ts"] is None and row["retry_interval"] == 0
    status, rooms = await admin_call(a, admin, "GET", f"/v1/federation/destinations/{b.name}/rooms")
    assert status == 200 and [r["room_id"] for r in rooms["rooms"]] == [room_id]
    assert rooms["rooms"][0]["stream_ordering"] > 0 and rooms["total"] == 1

    # B goes down; A's next event fails to reach it and A backs off for 10 minutes.
    await b.stop()
    await a.send_text(admin, room_id, "while you were away")

    async def backing_off() -> dict[str, Any] | None:
        status, body = await admin_call(a, admin, "GET", f"/v1/federation/destinations/{b.name}")
        return body if body.get("failure_ts") else None

    row = await eventually(backing_off)
    assert row["retry_interval"] == 600_000 and row["retry_last_ts"] >= row["failure_ts"]
    status, listed = await admin_call(
        a, admin, "GET", "/v1/federation/destinations?order_by=failure_ts&dir=b"
    )
    assert listed["destinations"][0]["destination"] == b.name

    # B is back. Without a reset A would wait 10 minutes; reset_connection retries now.
    await b.start()
    status, body = await admin_call(
        a, admin, "POST", f"/v1/federation/destinations/{b.name}/reset_connection"
    )
    assert (status, body) == (200, {})
    assert await eventually(lambda: _has_text(b, bob, room_id, "while you were away"))
    status, row = await admin_call(a, admin, "GET", f"/v1/federation/destinations/{b.name}")
    assert row["failure_ts"] is None

    status, body = await admin_call(a, admin, "GET", "/v1/federation/destinations/unknown.example")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await admin_call(
        a, admin, "POST", "/v1/federation/destinations/unknown.example/reset_connection"
    )
    assert status == 404
    status, body = await admin_call(a, admin, "GET", "/v1/federation/destinations?destination=127")
    assert body["total"] == 1


async def _has_text(server: LoopbackServer, user: str, room_id: str, text: str) -> bool | None:
    return True if text in await server.sync_texts(user, room_id) else None


async def test_invites_into_a_blocked_room_are_refused_over_federation(pair: Any) -> None:
    a, b = pair
    admin = await a.register_admin("admin")
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await b.create_room(bob, preset="private_chat")
    status, body = await admin_call_json(
        a, admin, "PUT", f"/v1/rooms/{room_id}/block", {"block": True}
    )
    assert body == {"block": True}
    status, body = await b.call("POST", f"/rooms/{room_id}/invite", bob, {"user_id": alice})
    assert status == 403, body
    data = await a.ok("GET", "/sync", alice, timeout="0")
    assert room_id not in data.get("rooms", {}).get("invite", {})
    await admin_call_json(a, admin, "PUT", f"/v1/rooms/{room_id}/block", {"block": False})
    status, body = await b.call("POST", f"/rooms/{room_id}/invite", bob, {"user_id": alice})
    assert status == 200, body


async def admin_call_json(
    server: LoopbackServer, admin: str, method: str, path: str, body: Any
) -> tuple[int, Any]:
    url = f"http://{server.name}/_synapse/admin{path}"
    headers = {"Authorization": f"Bearer {server.tokens[admin]}"}
    async with server.http.request(method, url, headers=headers, json=body) as resp:
        return resp.status, await resp.json(content_type=None)
