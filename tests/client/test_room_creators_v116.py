"""v1.16 room creators from the client API: `additional_creators` on /upgrade and the
trusted_private_chat preset merging invitees into supplied additional_creators."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, make_user

V3 = "/_matrix/client/v3"


async def call(
    client: TestClient, method: str, path: str, token: str, body: Any = None, status: int = 200
) -> Any:
    response = await client.request(method, V3 + path, json=body, headers=auth(token))
    data = await response.json()
    assert response.status == status, data
    return data


async def test_upgrade_with_additional_creators(app_client: TestClient) -> None:
    alice, atok, _ = await make_user(app_client, "alice")
    bob, btok, _ = await make_user(app_client, "bob")
    carol, _, _ = await make_user(app_client, "carol")
    room = (
        await call(
            app_client,
            "POST",
            "/createRoom",
            atok,
            {"room_version": "11", "preset": "public_chat"},
        )
    )["room_id"]
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    pl = await call(app_client, "GET", f"/rooms/{room}/state/m.room.power_levels", atok)
    pl["users"][carol] = 50
    await call(app_client, "PUT", f"/rooms/{room}/state/m.room.power_levels", atok, pl)

    new = (
        await call(
            app_client,
            "POST",
            f"/rooms/{room}/upgrade",
            atok,
            {"new_version": "12", "additional_creators": [bob, bob, alice]},
        )
    )["replacement_room"]
    create = await call(app_client, "GET", f"/rooms/{new}/state/m.room.create", atok)
    assert create["additional_creators"] == [bob]
    new_pl = await call(app_client, "GET", f"/rooms/{new}/state/m.room.power_levels", atok)
    # Creators are implicit (infinite power) in v12; other levels carry over.
    assert alice not in new_pl["users"] and bob not in new_pl["users"]
    assert new_pl["users"][carol] == 50

    # Without the field (and towards a version without privileged creators) none are set.
    room2 = (await call(app_client, "POST", "/createRoom", atok, {"room_version": "10"}))["room_id"]
    new2 = (
        await call(
            app_client,
            "POST",
            f"/rooms/{room2}/upgrade",
            atok,
            {"new_version": "11", "additional_creators": [bob]},
        )
    )["replacement_room"]
    create2 = await call(app_client, "GET", f"/rooms/{new2}/state/m.room.create", atok)
    assert "additional_creators" not in create2


async def test_upgrade_rejects_bad_additional_creators(app_client: TestClient) -> None:
    _, atok, _ = await make_user(app_client, "alice")
    room = (await call(app_client, "POST", "/createRoom", atok, {"room_version": "11"}))["room_id"]
    for bad, code in (
        ("@bob:x", "M_BAD_JSON"),
        (["not a user"], "M_INVALID_PARAM"),
        ([1], "M_BAD_JSON"),
    ):
        err = await call(
            app_client,
            "POST",
            f"/rooms/{room}/upgrade",
            atok,
            {"new_version": "12", "additional_creators": bad},
            status=400,
        )
        assert err["errcode"] == code


async def test_trusted_private_chat_merges_invitees(app_client: TestClient) -> None:
    _, atok, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    carol, _, _ = await make_user(app_client, "carol")
    room = (
        await call(
            app_client,
            "POST",
            "/createRoom",
            atok,
            {
                "room_version": "12",
                "preset": "trusted_private_chat",
                "invite": [bob],
                "creation_content": {"additional_creators": [carol]},
            },
        )
    )["room_id"]
    create = await call(app_client, "GET", f"/rooms/{room}/state/m.room.create", atok)
    assert create["additional_creators"] == [carol, bob]
