"""Remote device lists (issue 9), through /keys/query and signed EDUs from a fake peer:
the first query for a remote user who shares a room with ours resyncs their whole list
with GET /user/devices and caches it; m.device_list_update EDUs that follow what we hold
patch the cache (no network); a missed update (prev_id not ours) marks it stale and
the next query resyncs. Users sharing no room are asked with user/keys/query each time."""

from __future__ import annotations

from typing import Any

from homeserver.appstate import E2EE_KEYS
from tests.client.helpers import auth, make_user
from tests.federation.inbound_helpers import RITA, create_room, fed, join_remote, seed_remote_key


class FakeRemoteKeys:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.stream_id = 7
        self.devices = {"RDEV1": "key1"}

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        self.calls.append(f"devices {user_id}")
        return {
            "user_id": user_id,
            "stream_id": self.stream_id,
            "devices": [
                {"device_id": d, "keys": {"device_id": d, "user_id": user_id, "k": k}}
                for d, k in self.devices.items()
            ],
            "master_key": {"user_id": user_id, "usage": ["master"], "keys": {"ed25519:m": "m"}},
        }

    async def query(self, destination: str, device_keys: dict, timeout_ms: int) -> dict:
        self.calls.append(f"query {sorted(device_keys)}")
        return {"device_keys": {u: {} for u in device_keys}}

    async def claim(self, destination: str, otks: dict, timeout_ms: int) -> dict:
        return {"one_time_keys": {}}


async def _query(client, token: str, user_id: str) -> dict:
    resp = await client.post(
        "/_matrix/client/v3/keys/query",
        json={"device_keys": {user_id: []}},
        headers=auth(token),
    )
    assert resp.status == 200
    return await resp.json()


async def _edu(client, txn: str, content: dict) -> None:
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v1/send/{txn}",
        {
            "origin": "remote.test",
            "origin_server_ts": 1,
            "pdus": [],
            "edus": [{"edu_type": "m.device_list_update", "content": content}],
        },
    )
    assert status == 200, body


async def test_remote_device_lists_are_cached_and_kept_current(app_client) -> None:
    client = app_client
    await seed_remote_key(client)
    alice, token, _ = await make_user(client, "alice")
    room_id = await create_room(client, creator=alice)
    await join_remote(client, room_id)
    fake = FakeRemoteKeys()
    client.app[E2EE_KEYS]._remote = fake  # the federation port, faked  # noqa: SLF001

    first = await _query(client, token, RITA)
    assert first["device_keys"][RITA]["RDEV1"]["k"] == "key1"
    assert first["master_keys"][RITA]["usage"] == ["master"]
    second = await _query(client, token, RITA)
    assert second["device_keys"] == first["device_keys"]
    assert fake.calls == [f"devices {RITA}"]  # the second answer came from the cache

    # An update that follows stream 7: applied in place, no network.
    keys2 = {"device_id": "RDEV2", "user_id": RITA, "k": "key2"}
    await _edu(
        client,
        "d1",
        {"user_id": RITA, "device_id": "RDEV2", "stream_id": 8, "prev_id": [7], "keys": keys2},
    )
    third = await _query(client, token, RITA)
    assert set(third["device_keys"][RITA]) == {"RDEV1", "RDEV2"}
    await _edu(
        client,
        "d2",
        {"user_id": RITA, "device_id": "RDEV1", "stream_id": 9, "prev_id": [8], "deleted": True},
    )
    assert set((await _query(client, token, RITA))["device_keys"][RITA]) == {"RDEV2"}
    assert fake.calls == [f"devices {RITA}"]

    # A gap (we never saw 10): stale, the next query resyncs from the server.
    fake.devices = {"RDEV3": "key3"}
    fake.stream_id = 12
    await _edu(
        client,
        "d3",
        {
            "user_id": RITA,
            "device_id": "RDEV3",
            "stream_id": 12,
            "prev_id": [11],
            "keys": {"k": "key3"},
        },
    )
    fourth = await _query(client, token, RITA)
    assert set(fourth["device_keys"][RITA]) == {"RDEV3"}
    assert fake.calls == [f"devices {RITA}", f"devices {RITA}"]

    # Someone sharing no room with us: asked each time with user/keys/query.
    stranger = "@stranger:remote.test"
    await _query(client, token, stranger)
    await _query(client, token, stranger)
    assert fake.calls[2:] == [f"query {[stranger]}", f"query {[stranger]}"]
