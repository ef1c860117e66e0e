"""GET /capabilities and GET /versions: exactly what we promise clients."""

from __future__ import annotations

from typing import Any

from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from tests.client.helpers import auth, make_user


async def test_capabilities_body(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    for prefix in ("v3", "r0"):
        r = await app_client.get(f"/_matrix/client/{prefix}/capabilities", headers=auth(token))
        assert r.status == 200
        assert await r.json() == {
            "capabilities": {
                "m.room_versions": {
                    "default": "12",
                    "available": {str(v): "stable" for v in range(1, 13)},
                },
                "m.change_password": {"enabled": True},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
                "m.get_login_token": {"enabled": True},
                "m.profile_fields": {"enabled": True},
                "m.forget_forced_upon_leave": {"enabled": False},
            }
        }
    assert set(KNOWN_ROOM_VERSIONS) == {str(v) for v in range(1, 13)}


async def test_capabilities_default_room_version_from_config(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    from homeserver.app import create_app

    client = await aiohttp_client(create_app(tmp_config(default_room_version="10")))
    _, token, _ = await make_user(client, "alice")
    body = await (await client.get("/_matrix/client/v3/capabilities", headers=auth(token))).json()
    assert body["capabilities"]["m.room_versions"]["default"] == "10"


async def test_capabilities_needs_a_token(app_client: Any) -> None:
    r = await app_client.get("/_matrix/client/v3/capabilities")
    assert r.status == 401
    assert (await r.json())["errcode"] == "M_MISSING_TOKEN"
    r = await app_client.get("/_matrix/client/v3/capabilities", headers=auth("nope"))
    assert r.status == 401
    assert (await r.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_versions(app_client: Any) -> None:
    r = await app_client.get("/_matrix/client/versions")
    assert r.status == 200
    body = await r.json()
    assert body["versions"] == [f"v1.{n}" for n in range(1, 20)]
    assert body["unstable_features"] == {
        "org.matrix.e2e_cross_signing": True,
        "org.matrix.msc2285.stable": True,
        "org.matrix.msc3440.stable": True,
        "uk.tcpip.msc4133.stable": True,
        "org.matrix.msc3882": False,
        "org.matrix.label_based_filtering": False,
        "uk.half-shot.msc2666.query_mutual_rooms": True,
        "org.matrix.msc3827.stable": True,
        "org.matrix.msc3881": True,
        "org.matrix.msc3814": True,
        "org.matrix.msc4140": True,
        "org.matrix.simplified_msc3575": True,
    }
