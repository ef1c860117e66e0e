"""The operator's `presence.enabled` (Synapse's key), seen by users on two servers:
"a" runs with presence off or untracked, "b" with the default.

- off: nothing is kept, shown or sent: a user's own PUT answers 200 and changes
  nothing (GET says offline, as Synapse answers), no sync carries presence, b's users
  never learn a's users' presence, and what b sends is dropped;
- untracked: only what users set themselves: a sync no longer brings a user online
  and no timer takes them offline, but an explicit change is shown and sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from homeserver.config import load_config
from tests.federation.multiserver import LoopbackServer, eventually
from tests.federation.test_device_list_federation import shared_room


def _presence_of(body: dict[str, Any], user: str) -> dict[str, Any] | None:
    found = None
    for event in body.get("presence", {}).get("events", []):
        if event.get("sender") == user:
            found = event["content"]
    return found


async def _seen_by(server: LoopbackServer, viewer: str, user: str) -> dict[str, Any] | None:
    return _presence_of(await server.ok("GET", "/sync", viewer, timeout="0"), user)


async def _set(server: LoopbackServer, user: str, state: str, msg: str) -> None:
    body = {"presence": state, "status_msg": msg}
    await server.ok("PUT", f"/presence/{user}/status", user, body)


async def test_presence_off_keeps_shows_and_sends_nothing(loopback) -> None:
    a = await loopback("a", presence={"enabled": False})
    b = await loopback("b")
    alice, bob, _room = await shared_room(a, b)
    carol = await a.register("carol")
    await a.ok("POST", f"/join/{_room}", carol, {})
    await _set(a, alice, "online", "at my desk")
    assert await a.ok("GET", f"/presence/{alice}/status", alice) == {"presence": "offline"}
    assert await a.ok("GET", f"/presence/{alice}/status", carol) == {"presence": "offline"}
    assert await _seen_by(a, carol, alice) is None
    # b's user is online on b (where presence runs) and b tells a: a drops it.
    await _set(b, bob, "online", "from b")
    assert await eventually(lambda: _seen_matches(b, bob, bob, "from b"))
    await asyncio.sleep(1.0)  # time for b's EDU to arrive at a
    assert await _seen_by(a, alice, bob) is None
    assert await a.ok("GET", f"/presence/{bob}/status", alice) == {"presence": "offline"}
    # ... and a never told b of alice.
    assert await _seen_by(b, bob, alice) is None
    status, _ = await b.call("GET", f"/presence/{alice}/status", bob)
    assert status == 404


async def _seen_matches(server: LoopbackServer, viewer: str, user: str, msg: str) -> bool:
    content = await _seen_by(server, viewer, user)
    return content is not None and content.get("status_msg") == msg


async def test_untracked_presence_changes_only_when_the_user_says(loopback) -> None:
    a = await loopback("a", presence={"enabled": "untracked"})
    b = await loopback("b")
    alice, bob, _room = await shared_room(a, b)
    # A sync (set_presence=online by default) does not bring alice online.
    await a.ok("GET", "/sync", alice, timeout="0")
    status, body = await a.call("GET", f"/presence/{alice}/status", alice)
    assert status == 404 or body["presence"] == "offline", body
    # Her own change is kept, shown and sent to b.
    await _set(a, alice, "unavailable", "in a meeting")
    got = await a.ok("GET", f"/presence/{alice}/status", alice)
    assert (got["presence"], got["status_msg"]) == ("unavailable", "in a meeting")
    assert await eventually(lambda: _seen_matches(b, bob, alice, "in a meeting"))
    # Sending a message and syncing do not make her online.
    await a.send_text(alice, _room, "hello")
    await a.ok("GET", "/sync", alice, timeout="0", set_presence="online")
    got = await a.ok("GET", f"/presence/{alice}/status", alice)
    assert got["presence"] == "unavailable"


def test_presence_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    for bad, where in (('"maybe"', "presence.enabled"), ("1", "presence.enabled")):
        path.write_text(f"server_name: example.org\npresence: {{enabled: {bad}}}\n")
        with pytest.raises(Exception, match=where):
            load_config(path)
    path.write_text("server_name: example.org\npresence: {presence_router: {module: x}}\n")
    with pytest.raises(Exception, match="presence.presence_router"):
        load_config(path)
