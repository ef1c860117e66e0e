"""OpenID tokens (client request_token -> federation userinfo) and /v1/mutual_rooms."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.accounts.openid import OpenIdTokens
from homeserver.app import create_app
from homeserver.appstate import LISTENERS
from homeserver.client import mutual_rooms
from homeserver.config import ListenerConfig
from tests.client.helpers import (
    auth,
    deployed,
    eventually,
    join_room,
    leave_room,
    make_room,
    make_user,
)

USERINFO = "/_matrix/federation/v1/openid/userinfo"
MUTUAL = "/_matrix/client/v1/mutual_rooms"


async def test_openid_token_round_trip(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    path = f"/_matrix/client/v3/user/{alice}/openid/request_token"
    response = await app_client.post(path, json={}, headers=auth(token))
    body = await response.json()
    assert response.status == 200, body
    assert set(body) == {"access_token", "token_type", "matrix_server_name", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["matrix_server_name"] == "test.local"
    assert body["expires_in"] == 3600

    # A third party exchanges it, without X-Matrix auth, for the user's ID.
    info = await app_client.get(USERINFO, params={"access_token": body["access_token"]})
    assert info.status == 200
    assert await info.json() == {"sub": alice}

    # It is not an access token for the client API.
    whoami = await app_client.get(
        "/_matrix/client/v3/account/whoami", headers=auth(body["access_token"])
    )
    assert whoami.status == 401

    for params in ({"access_token": "nope"}, {}):
        bad = await app_client.get(USERINFO, params=params)
        assert bad.status == 401
        assert (await bad.json())["errcode"] == "M_UNKNOWN_TOKEN"

    other = await app_client.post(
        f"/_matrix/client/v3/user/{bob}/openid/request_token", json={}, headers=auth(token)
    )
    assert other.status == 403
    assert (await other.json())["errcode"] == "M_FORBIDDEN"
    no_auth = await app_client.post(path, json={})
    assert no_auth.status == 401
    not_object = await app_client.post(path, json=[], headers=auth(token))
    assert not_object.status == 400


def test_openid_tokens_expire_and_stay_bounded() -> None:
    now = [1000.0]
    tokens = OpenIdTokens(lifetime_s=10, max_tokens=2, clock=lambda: now[0])
    first = tokens.issue("@a:x")
    assert tokens.user_for(first) == "@a:x"
    now[0] += 10
    assert tokens.user_for(first) is None
    a, b, c = tokens.issue("@a:x"), tokens.issue("@b:x"), tokens.issue("@c:x")
    assert tokens.user_for(a) is None  # evicted: at most two live tokens
    assert (tokens.user_for(b), tokens.user_for(c)) == ("@b:x", "@c:x")


async def test_mutual_rooms(app_client: TestClient, monkeypatch) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    carol, _, _ = await make_user(app_client, "carol")
    shared = []
    for _ in range(3):
        room = await make_room(app_client, alice)
        await join_room(app_client, room, bob)
        shared.append(room)
    only_alice = await make_room(app_client, alice)
    left = await make_room(app_client, alice)
    await join_room(app_client, left, bob)
    await leave_room(app_client, left, bob)
    assert only_alice not in shared

    async def mutual() -> Any:
        response = await app_client.get(MUTUAL, params={"user_id": bob}, headers=auth(token))
        assert response.status == 200
        return await response.json()

    want = {"joined": sorted(shared), "count": 3}
    # (A worker deployment: Alice's reader hears of Bob's leave a moment later.)
    assert await eventually(app_client, mutual, lambda got: got == want) == want
    if deployed(app_client):
        return  # the batch size below is patched in this process only

    # Batches: next_batch until the end, count always the total.
    monkeypatch.setattr(mutual_rooms, "BATCH_SIZE", 2)
    page1 = await (
        await app_client.get(MUTUAL, params={"user_id": bob}, headers=auth(token))
    ).json()
    assert page1["joined"] == sorted(shared)[:2] and page1["count"] == 3
    page2 = await (
        await app_client.get(
            MUTUAL, params={"user_id": bob, "from": page1["next_batch"]}, headers=auth(token)
        )
    ).json()
    assert page2 == {"joined": sorted(shared)[2:], "count": 3}
    # MSC2666's last unstable form (matrix-js-sdk): batch_token / next_batch_token.
    unstable = "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"
    page1 = await (
        await app_client.get(unstable, params={"user_id": bob}, headers=auth(token))
    ).json()
    assert page1["joined"] == sorted(shared)[:2] and "next_batch" not in page1
    params = {"user_id": bob, "batch_token": page1["next_batch_token"]}
    page2 = await (await app_client.get(unstable, params=params, headers=auth(token))).json()
    assert page2 == {"joined": sorted(shared)[2:], "count": 3}

    nobody = await app_client.get(MUTUAL, params={"user_id": carol}, headers=auth(token))
    assert await nobody.json() == {"joined": [], "count": 0}
    unknown = await app_client.get(
        MUTUAL, params={"user_id": "@ghost:test.local"}, headers=auth(token)
    )
    assert await unknown.json() == {"joined": [], "count": 0}
    for params in ({}, {"user_id": "bob"}, {"user_id": alice}, {"user_id": bob, "from": "%%%"}):
        bad = await app_client.get(MUTUAL, params=params, headers=auth(token))
        assert bad.status == 400, params
        assert (await bad.json())["errcode"] == "M_INVALID_PARAM"
    assert (await app_client.get(MUTUAL, params={"user_id": bob})).status == 401


async def test_userinfo_is_served_on_client_and_openid_listeners(
    aiohttp_client, tmp_config
) -> None:
    """Integration managers call userinfo on the URL they know (often the client one):
    it is served on client, federation and Synapse's `openid` listeners, while the
    rest of the federation API stays off a client-only listener."""
    client = await aiohttp_client(create_app(tmp_config()))
    alice, token, _ = await make_user(client, "alice")
    response = await client.post(
        f"/_matrix/client/v3/user/{alice}/openid/request_token", json={}, headers=auth(token)
    )
    openid_token = (await response.json())["access_token"]
    port = client.server.port
    for resources in ({"client"}, {"openid"}, {"federation"}):
        client.server.app[LISTENERS][port] = ListenerConfig(
            port=port, resources=frozenset(resources)
        )
        info = await client.get(USERINFO, params={"access_token": openid_token})
        assert (info.status, await info.json()) == (200, {"sub": alice}), resources
        version = await client.get("/_matrix/federation/v1/version")
        assert version.status == (200 if resources == {"federation"} else 404), resources
