"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy (issue 13, local part): the whole
tree breadth first, only rooms the user may see (private rooms of a space do not
leak), cycles cut, suggested_only, max_depth, and paging that returns every room
once and refuses a token for other parameters."""

from __future__ import annotations

from typing import Any

from tests.client.helpers import auth, make_user

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


async def _room(client: Any, token: str, **body: Any) -> str:
    resp = await client.post(f"{V3}/createRoom", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["room_id"]


async def _child(client: Any, token: str, parent: str, child: str, suggested: bool = False):
    resp = await client.put(
        f"{V3}/rooms/{parent}/state/m.space.child/{child}",
        json={"via": ["test.local"], "suggested": suggested},
        headers=auth(token),
    )
    assert resp.status == 200


async def _walk(client: Any, token: str, room: str, **params: Any) -> tuple[int, Any]:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    resp = await client.get(f"{V1}/rooms/{room}/hierarchy", params=query, headers=auth(token))
    return resp.status, await resp.json()


async def test_space_tree_visibility_cycles_and_paging(app_client) -> None:
    _, atok, _ = await make_user(app_client, "alice")
    _, btok, _ = await make_user(app_client, "bob")
    space = await _room(
        app_client, atok, preset="public_chat", name="Space", creation_content={"type": "m.space"}
    )
    sub = await _room(
        app_client, atok, preset="public_chat", name="Sub", creation_content={"type": "m.space"}
    )
    lobby = await _room(app_client, atok, preset="public_chat", name="Lobby")
    secret = await _room(app_client, atok, preset="private_chat", name="Secret")
    deep = await _room(app_client, atok, preset="public_chat", name="Deep")
    await _child(app_client, atok, space, lobby, suggested=True)
    await _child(app_client, atok, space, secret)
    await _child(app_client, atok, space, sub)
    await _child(app_client, atok, sub, deep)
    await _child(app_client, atok, sub, space)  # a cycle

    status, body = await _walk(app_client, btok, space)
    assert status == 200, body
    names = [r.get("name") for r in body["rooms"]]
    assert names == ["Space", "Lobby", "Sub", "Deep"]  # breadth first; Secret is private
    top = body["rooms"][0]
    assert top["room_type"] == "m.space" and top["join_rule"] == "public"
    kids = {c["state_key"] for c in top["children_state"]}
    assert kids == {lobby, secret, sub}
    assert all("origin_server_ts" in c for c in top["children_state"])
    assert "next_batch" not in body

    # Alice, in the private room, sees it.
    _, body = await _walk(app_client, atok, space)
    assert [r.get("name") for r in body["rooms"]] == ["Space", "Lobby", "Secret", "Sub", "Deep"]

    _, body = await _walk(app_client, btok, space, suggested_only=True)
    assert [r.get("name") for r in body["rooms"]] == ["Space", "Lobby"]
    _, body = await _walk(app_client, btok, space, max_depth=1)
    assert [r.get("name") for r in body["rooms"]] == ["Space", "Lobby", "Sub"]

    pages, token = [], None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if token:
            params["from"] = token
        status, body = await _walk(app_client, btok, space, **params)
        assert status == 200, body
        pages.append([r.get("name") for r in body["rooms"]])
        token = body.get("next_batch")
        if not token:
            break
    assert pages == [["Space", "Lobby"], ["Sub", "Deep"]]
    status, body = await _walk(app_client, btok, space, suggested_only=True, **{"from": "x_2"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    # A private room itself cannot be walked by an outsider.
    status, body = await _walk(app_client, btok, secret)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
