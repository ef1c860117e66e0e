"""E2EE key uploads, cross-signing and device renames served by the client readers (`stream_writers:
{device_lists: [...]}`).

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT) whose two client readers write device lists; server B is one process on
loopback, federating with A. With A's main SIGKILLed, a device uploads its device keys
and one-time keys through a reader and through nginx (before, the readers forwarded
/keys/upload to the main and answered 502): the counts come back and reach the device's
/sync, a local user sharing a room sees the device-list change (and that of a device
rename on the other reader, of cross-signing keys set and then replaced through
user-interactive auth begun on one reader and completed on the other, and of a
cross-signing signature of the device), and the remote user's server receives each
m.device_list_update or m.signing_key_update (queued in the durable outbox by the
reader, delivered by A's federation sender woken over the bus). Once the main is back,
the keys and signature the readers stored are the ones another user claims and queries.

Key queries and claims are the readers' too (before, they went to the main: with it
down, no Element could start an encrypted session): with A's main SIGKILLed, a user
queries a local and a remote user's keys through nginx and through each reader (the
reader asks B itself), claims the remote user's one-time key, and claims a local
device's one-time keys through both readers at once: every key is handed out once,
then the fallback key. Devices are deleted there too (before, by the main alone): with
the main down, a logout through nginx, a DELETE /devices/{id} whose user-interactive
auth begins on one reader and ends on the other, /delete_devices and /logout/all; each
deleted device's token is refused at once by every reader, its keys are gone, and
local and remote users sharing a room see the device-list change. And sessions begin
there (before, on the main alone): with the main down, a password login through nginx
(a new device: a device-list change here and on B), a refreshable session refreshed
(Element X's access tokens last five minutes: without /refresh its sessions would end
during a longer outage), a login token issued on one reader and used on the other, and
a wrong password refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import sign_json

from tests.client.test_e2ee_keys import cross_signing_key, device_keys
from tests.client.test_workers import port_url
from tests.federation.multiserver import (
    READERS,
    LoopbackServer,
    eventually,
    post_to,
    room_of_three,
    writers_and_peer,
)
from tests.federation.test_device_list_federation import changed_for


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    async with writers_and_peer(tmp_path, {"device_lists": READERS}) as pair:
        yield pair


DEVICE_SIGNING = "/keys/device_signing/upload"


def _cross_signing(user: str, seed: str) -> tuple[dict[str, Any], Any]:
    """A master and a self-signing key: (the upload body, the self-signing key)."""
    master, self_signing = generate_signing_key("m" + seed), generate_signing_key("s" + seed)
    upload = {
        "master_key": cross_signing_key(user, "master", master),
        "self_signing_key": cross_signing_key(user, "self_signing", self_signing, master),
    }
    return upload, self_signing


def _one_time_keys(first: int, count: int) -> dict[str, str]:
    return {f"curve25519:K{i}": f"otk{i:03d}" + "A" * 37 for i in range(first, first + count)}


async def test_readers_store_keys_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob, room_id = await room_of_three(a, b)
    device = (await a.ok("GET", "/account/whoami", alice))["device_id"]
    carol_since = (await a.sync(carol))["next_batch"]
    bob_since = (await b.sync(bob))["next_batch"]
    token = a.tokens[alice]
    keys = device_keys(alice, device, generate_signing_key("d"))
    a.deployment.kill("main")
    try:
        reader1 = port_url(a.deployment, READERS[0])
        status, body = await post_to(
            a.http,
            reader1,
            token,
            "/keys/upload",
            {"device_keys": keys, "one_time_keys": _one_time_keys(0, 5)},
        )
        assert (status, body["one_time_key_counts"]["curve25519"]) == (200, 5), body
        status, body = await post_to(
            a.http,
            f"http://{a.name}",
            token,
            "/keys/upload",
            {"one_time_keys": _one_time_keys(5, 3)},
        )
        assert (status, body["one_time_key_counts"]["curve25519"]) == (200, 8), body

        async def alice_counts() -> dict[str, int] | None:
            data = await a.ok("GET", "/sync", alice, timeout="0")
            counts = data.get("device_one_time_keys_count", {})
            return counts if counts.get("curve25519") == 8 else None

        await eventually(alice_counts, timeout=15)
        carol_since = await changed_for(a, carol, carol_since, alice)
        # Delivered by A's federation sender, woken by the reader (the main is down).
        bob_since = await changed_for(b, bob, bob_since, alice)
        # A rename, on the other reader: another device-list change, here and there.
        reader2 = port_url(a.deployment, READERS[1])
        async with a.http.put(
            f"{reader2}/_matrix/client/v3/devices/{device}",
            json={"display_name": "renamed"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        assert (await a.ok("GET", f"/devices/{device}", alice))["display_name"] == "renamed"
        carol_since = await changed_for(a, carol, carol_since, alice)
        bob_since = await changed_for(b, bob, bob_since, alice)
        # Cross-signing keys: the first set needs no re-authentication; replacing them
        # does (a UIA session started on one reader, completed on the other: sessions
        # are in the database).
        first, self_signing = _cross_signing(alice, "1")
        status, body = await post_to(a.http, reader2, token, DEVICE_SIGNING, first)
        assert (status, body) == (200, {})
        replacement, self_signing = _cross_signing(alice, "2")
        status, challenge = await post_to(a.http, reader1, token, DEVICE_SIGNING, replacement)
        assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
        password = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice},
            "password": "pw-alice",
            "session": challenge["session"],
        }
        status, body = await post_to(
            a.http, reader2, token, DEVICE_SIGNING, {**replacement, "auth": password}
        )
        assert (status, body) == (200, {})
        carol_since = await changed_for(a, carol, carol_since, alice)
        await changed_for(b, bob, bob_since, alice)
        # Alice verifies her device: its keys signed with her self-signing key.
        ssk_public = encode_verify_key_base64(self_signing.verify_key)
        self_signing.version = ssk_public
        signed = sign_json(dict(keys), alice, self_signing)
        status, body = await post_to(
            a.http, reader1, token, "/keys/signatures/upload", {alice: {device: signed}}
        )
        assert (status, body) == (200, {"failures": {}})
        await changed_for(a, carol, carol_since, alice)
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")
    claimed = await a.ok(
        "POST", "/keys/claim", carol, {"one_time_keys": {alice: {device: "curve25519"}}}
    )
    [(key_id, value)] = claimed["one_time_keys"][alice][device].items()
    assert value == _one_time_keys(0, 8)[key_id]
    queried = await a.ok("POST", "/keys/query", carol, {"device_keys": {alice: []}})
    assert queried["master_keys"][alice]["keys"] == replacement["master_key"]["keys"]
    stored = queried["device_keys"][alice][device]
    assert stored["keys"] == keys["keys"]
    assert (
        stored["signatures"][alice][f"ed25519:{ssk_public}"]
        == (signed["signatures"][alice][f"ed25519:{ssk_public}"])
    )


async def test_readers_answer_key_queries_and_claims_while_the_main_is_down(
    servers: Any,
) -> None:
    a, b = servers
    alice, carol, bob, _room_id = await room_of_three(a, b)
    alice_device = (await a.ok("GET", "/account/whoami", alice))["device_id"]
    bob_device = (await b.ok("GET", "/account/whoami", bob))["device_id"]
    alice_keys = device_keys(alice, alice_device, generate_signing_key("a"))
    bob_keys = device_keys(bob, bob_device, generate_signing_key("b"))
    otks = _one_time_keys(0, 12)
    fallback = {"curve25519:F1": {"key": "fallback" + "B" * 35, "fallback": True}}
    await a.ok(
        "POST",
        "/keys/upload",
        alice,
        {"device_keys": alice_keys, "one_time_keys": otks, "fallback_keys": fallback},
    )
    await b.ok(
        "POST",
        "/keys/upload",
        bob,
        {"device_keys": bob_keys, "one_time_keys": _one_time_keys(0, 2)},
    )
    token = a.tokens[carol]
    readers = [port_url(a.deployment, r) for r in READERS]
    a.deployment.kill("main")
    try:
        wanted = {"device_keys": {alice: [], bob: []}}
        for base in [f"http://{a.name}", *readers]:
            status, body = await post_to(a.http, base, token, "/keys/query", wanted)
            assert status == 200 and body["failures"] == {}, (base, body)
            assert body["device_keys"][alice][alice_device]["keys"] == alice_keys["keys"]
            assert body["device_keys"][bob][bob_device]["keys"] == bob_keys["keys"]

        status, body = await post_to(
            a.http,
            readers[0],
            token,
            "/keys/claim",
            {"one_time_keys": {bob: {bob_device: "curve25519"}}},
        )
        assert status == 200 and body["failures"] == {}, body
        [(key_id, value)] = body["one_time_keys"][bob][bob_device].items()
        assert value == _one_time_keys(0, 2)[key_id]

        # Fourteen claims of alice's device at once through both readers: twelve
        # one-time keys, each handed out once, then the fallback key.
        claim = {"one_time_keys": {alice: {alice_device: "curve25519"}}}
        answers = await asyncio.gather(
            *(post_to(a.http, readers[i % 2], token, "/keys/claim", claim) for i in range(14))
        )
        claimed = []
        for status, body in answers:
            assert status == 200, body
            claimed += list(body["one_time_keys"][alice][alice_device].items())
        one_time = sorted(k for k, _v in claimed if k in otks)
        assert one_time == sorted(otks), claimed
        assert all(dict(claimed)[k] == otks[k] for k in one_time)
        rest = [k for k, _v in claimed if k not in otks]
        assert rest == ["curve25519:F1"] * 2, claimed
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


async def _whoami(a: LoopbackServer, base: str, token: str) -> tuple[int, Any]:
    """GET /account/whoami on one process of A (`base`) with `token`."""
    async with a.http.get(
        f"{base}/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json()


async def _login(a: LoopbackServer, user: str, device: str) -> str:
    """A new device of `user` (password pw-<localpart>): its access token."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": "pw-" + user[1:].partition(":")[0],
        "device_id": device,
    }
    return str((await a.ok("POST", "/login", None, body))["access_token"])


async def test_readers_delete_devices_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob, _room_id = await room_of_three(a, b)
    tokens = {d: await _login(a, alice, d) for d in ("PHONE", "LAPTOP", "TABLET", "OLD")}
    async with a.http.post(
        f"http://{a.name}/_matrix/client/v3/keys/upload",
        json={"device_keys": device_keys(alice, "PHONE", generate_signing_key("p"))},
        headers={"Authorization": f"Bearer {tokens['PHONE']}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    carol_since = (await a.sync(carol))["next_batch"]
    bob_since = (await b.sync(bob))["next_batch"]
    readers = [port_url(a.deployment, r) for r in READERS]

    async def whoami(base: str, token: str) -> int:
        return (await _whoami(a, base, token))[0]

    for token in tokens.values():  # every reader has each token cached
        assert [await whoami(r, token) for r in readers] == [200, 200]
    a.deployment.kill("main")
    try:
        # A logout through nginx: the device and its keys are gone, the token too.
        status, body = await post_to(a.http, f"http://{a.name}", tokens["PHONE"], "/logout", {})
        assert (status, body) == (200, {})
        assert [await whoami(r, tokens["PHONE"]) for r in readers] == [401, 401]
        queried = await a.ok("POST", "/keys/query", carol, {"device_keys": {alice: []}})
        assert "PHONE" not in queried["device_keys"].get(alice, {})
        carol_since = await changed_for(a, carol, carol_since, alice)
        bob_since = await changed_for(b, bob, bob_since, alice)

        # DELETE /devices/{id}: the auth challenge from one reader, answered on the other.
        async def delete(base: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with a.http.delete(
                f"{base}/_matrix/client/v3/devices/TABLET",
                json=body,
                headers={"Authorization": f"Bearer {tokens['LAPTOP']}"},
            ) as resp:
                return resp.status, await resp.json()

        status, challenge = await delete(readers[0], {})
        assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice},
            "password": "pw-alice",
            "session": challenge["session"],
        }
        assert await delete(readers[1], {"auth": auth}) == (200, {})
        assert [await whoami(r, tokens["TABLET"]) for r in readers] == [401, 401]
        # The password alone (no session) is enough, as for Synapse.
        password = {k: v for k, v in auth.items() if k != "session"}
        status, body = await post_to(
            a.http,
            readers[0],
            tokens["LAPTOP"],
            "/delete_devices",
            {"devices": ["OLD"], "auth": password},
        )
        assert (status, body) == (200, {})
        async with a.http.get(
            f"{readers[1]}/_matrix/client/v3/devices",
            headers={"Authorization": f"Bearer {tokens['LAPTOP']}"},
        ) as resp:
            listed = {d["device_id"] for d in (await resp.json())["devices"]}
        assert "TABLET" not in listed and "OLD" not in listed and "LAPTOP" in listed
        carol_since = await changed_for(a, carol, carol_since, alice)

        # Everything at once: every token of alice's is refused everywhere.
        status, body = await post_to(a.http, readers[1], tokens["LAPTOP"], "/logout/all", {})
        assert (status, body) == (200, {})
        for token in [tokens["LAPTOP"], a.tokens[alice]]:
            assert [await whoami(r, token) for r in readers] == [401, 401]
        await changed_for(b, bob, bob_since, alice)
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


async def test_readers_begin_and_refresh_sessions_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob, _room_id = await room_of_three(a, b)
    carol_since = (await a.sync(carol))["next_batch"]
    bob_since = (await b.sync(bob))["next_batch"]
    readers = [port_url(a.deployment, r) for r in READERS]

    async def whoami(base: str, token: str) -> tuple[int, Any]:
        return await _whoami(a, base, token)

    async def login(base: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with a.http.post(f"{base}/_matrix/client/v3/login", json=body) as resp:
            return resp.status, await resp.json()

    password = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-alice",
    }
    a.deployment.kill("main")
    try:
        async with a.http.get(f"http://{a.name}/_matrix/client/v3/login") as resp:
            assert resp.status == 200
            assert {"type": "m.login.password"} in (await resp.json())["flows"]
        status, body = await login(
            f"http://{a.name}", {**password, "device_id": "NEWPHONE", "refresh_token": True}
        )
        assert status == 200 and body["device_id"] == "NEWPHONE", body
        first = body["access_token"]
        for base in readers:
            assert await whoami(base, first) == (
                200,
                {"user_id": alice, "device_id": "NEWPHONE", "is_guest": False},
            )
        carol_since = await changed_for(a, carol, carol_since, alice)
        bob_since = await changed_for(b, bob, bob_since, alice)

        status, refreshed = await post_to(
            a.http, readers[1], first, "/refresh", {"refresh_token": body["refresh_token"]}
        )
        assert status == 200 and refreshed["expires_in_ms"] > 0, refreshed
        assert (await whoami(readers[0], refreshed["access_token"]))[0] == 200
        assert [(await whoami(r, first))[0] for r in readers] == [401, 401]

        # A login token (a QR login, say) issued on one reader, used on the other.
        async def get_token(body: dict[str, Any]) -> tuple[int, Any]:
            async with a.http.post(
                f"{readers[0]}/_matrix/client/v1/login/get_token",
                json=body,
                headers={"Authorization": f"Bearer {refreshed['access_token']}"},
            ) as resp:
                return resp.status, await resp.json()

        status, challenge = await get_token({})
        assert status == 401, challenge
        status, issued = await get_token({"auth": {**password, "session": challenge["session"]}})
        assert status == 200, issued
        status, body = await login(
            readers[1], {"type": "m.login.token", "token": issued["login_token"]}
        )
        assert status == 200 and body["user_id"] == alice, body
        assert (await login(readers[0], {"type": "m.login.token", "token": issued["login_token"]}))[
            0
        ] == 403  # single use

        status, body = await login(readers[0], {**password, "password": "wrong"})
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")
