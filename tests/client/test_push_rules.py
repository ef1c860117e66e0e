"""Push rules API: the default ruleset, CRUD with before/after ordering, enabled and
actions on default and user rules, and error cases."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, make_user

BASE = "/_matrix/client/v3/pushrules"


async def ids(client: TestClient, token: str, kind: str, defaults: bool = False) -> list[str]:
    """The rule IDs of `kind` in priority order (the user's own only, unless `defaults`)."""
    response = await client.get(f"{BASE}/global/", headers=auth(token))
    assert response.status == 200
    return [r["rule_id"] for r in (await response.json())[kind] if defaults or not r["default"]]


async def put(client: TestClient, token: str, path: str, body: Any, **params: str):
    return await client.put(f"{BASE}/global/{path}", json=body, params=params, headers=auth(token))


async def test_default_ruleset(app_client: TestClient) -> None:
    user, token, _ = await make_user(app_client, "alice")
    response = await app_client.get(f"{BASE}/", headers=auth(token))
    assert response.status == 200
    body = await response.json()
    ruleset = body["global"]
    assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
    mention = next(r for r in ruleset["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention == {
        "rule_id": ".m.rule.is_user_mention",
        "default": True,
        "enabled": True,
        "conditions": [
            {
                "kind": "event_property_contains",
                "key": "content.m\\.mentions.user_ids",
                "value": user,
            }
        ],
        "actions": [
            "notify",
            {"set_tweak": "sound", "value": "default"},
            {"set_tweak": "highlight"},
        ],
    }
    assert [r["rule_id"] for r in ruleset["underride"]][-2:] == [
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    single = await app_client.get(f"{BASE}/global/override/.m.rule.master", headers=auth(token))
    assert await single.json() == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": False,
        "conditions": [],
        "actions": [],
    }
    assert (
        await app_client.get(
            f"{BASE}/",
        )
    ).status == 401


async def test_create_order_update_delete(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "bob")
    cake = {"pattern": "cake", "actions": ["notify", {"set_tweak": "sound", "value": "cake.wav"}]}
    assert (await put(app_client, token, "content/cake", cake)).status == 200
    assert (
        await put(app_client, token, "content/pie", {"pattern": "pie", "actions": []})
    ).status == 200
    # New rules without before/after go first.
    assert await ids(app_client, token, "content") == ["pie", "cake"]
    r = await put(
        app_client,
        token,
        "content/lie",
        {"pattern": "cake*lie", "actions": ["notify"]},
        before="cake",
    )
    assert r.status == 200
    assert await ids(app_client, token, "content") == ["pie", "lie", "cake"]
    r = await put(
        app_client, token, "content/tart", {"pattern": "tart", "actions": []}, after="cake"
    )
    assert await ids(app_client, token, "content") == ["pie", "lie", "cake", "tart"]
    # Updating keeps the place; moving with before works.
    r = await put(app_client, token, "content/lie", {"pattern": "lie", "actions": []})
    assert await ids(app_client, token, "content") == ["pie", "lie", "cake", "tart"]
    r = await put(
        app_client, token, "content/tart", {"pattern": "tart", "actions": []}, before="pie"
    )
    assert await ids(app_client, token, "content") == ["tart", "pie", "lie", "cake"]
    got = await app_client.get(f"{BASE}/global/content/cake", headers=auth(token))
    assert await got.json() == {
        "rule_id": "cake",
        "default": False,
        "enabled": True,
        "pattern": "cake",
        "actions": ["notify", {"set_tweak": "sound", "value": "cake.wav"}],
    }
    # Unknown anchors, reserved IDs, default-relative placement.
    r = await put(app_client, token, "content/x", {"pattern": "x", "actions": []}, before="nope")
    assert r.status == 400 and (await r.json())["errcode"] == "M_UNKNOWN"
    r = await put(app_client, token, "override/.mine", {"actions": []})
    assert r.status == 400
    r = await put(app_client, token, "override/x", {"actions": []}, after=".m.rule.master")
    assert r.status == 400
    # Room rule: rule_id is the room ID; serialised without conditions.
    r = await put(app_client, token, "room/!abc:test.local", {"actions": []})
    assert r.status == 200
    got = await app_client.get(f"{BASE}/global/room/!abc:test.local", headers=auth(token))
    assert await got.json() == {
        "rule_id": "!abc:test.local",
        "default": False,
        "enabled": True,
        "actions": [],
    }
    # Delete.
    d = await app_client.delete(f"{BASE}/global/content/pie", headers=auth(token))
    assert d.status == 200 and await d.json() == {}
    assert await ids(app_client, token, "content") == ["tart", "lie", "cake"]
    d = await app_client.delete(f"{BASE}/global/content/pie", headers=auth(token))
    assert d.status == 404 and (await d.json())["errcode"] == "M_NOT_FOUND"
    d = await app_client.delete(f"{BASE}/global/override/.m.rule.master", headers=auth(token))
    assert d.status == 400
    assert ".m.rule.master" in await ids(app_client, token, "override", defaults=True)
    # Default content rules rank below the user's own.
    assert (await ids(app_client, token, "content", defaults=True))[-1] == (
        ".m.rule.contains_user_name"
    )


async def test_enabled_and_actions(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "carol")
    path = f"{BASE}/global/override/.m.rule.master"
    assert await (await app_client.get(f"{path}/enabled", headers=auth(token))).json() == {
        "enabled": False
    }
    r = await app_client.put(f"{path}/enabled", json={"enabled": True}, headers=auth(token))
    assert r.status == 200
    assert await (await app_client.get(f"{path}/enabled", headers=auth(token))).json() == {
        "enabled": True
    }
    msg = f"{BASE}/global/underride/.m.rule.message"
    r = await app_client.put(
        f"{msg}/actions", json={"actions": ["dont_notify"]}, headers=auth(token)
    )
    assert r.status == 200
    # Read back exactly as written (Synapse keeps the retired action too).
    assert await (await app_client.get(f"{msg}/actions", headers=auth(token))).json() == {
        "actions": ["dont_notify"]
    }
    # User rule enable/disable.
    assert (await put(app_client, token, "sender/@spam:x", {"actions": []})).status == 200
    sender = f"{BASE}/global/sender/@spam:x"
    r = await app_client.put(f"{sender}/enabled", json={"enabled": False}, headers=auth(token))
    assert r.status == 200
    assert (await (await app_client.get(sender, headers=auth(token))).json())["enabled"] is False
    # Errors: wrong types, unknown rules, wrong kind for a default rule.
    r = await app_client.put(f"{path}/enabled", json={"enabled": "yes"}, headers=auth(token))
    assert r.status == 400 and (await r.json())["errcode"] == "M_BAD_JSON"
    r = await app_client.put(f"{msg}/actions", json={"actions": "notify"}, headers=auth(token))
    assert r.status == 400
    r = await app_client.get(f"{BASE}/global/override/nope/enabled", headers=auth(token))
    assert r.status == 404 and (await r.json())["errcode"] == "M_NOT_FOUND"
    r = await app_client.get(f"{BASE}/global/underride/.m.rule.master", headers=auth(token))
    assert r.status == 404
    r = await app_client.get(f"{BASE}/global/bogus/x", headers=auth(token))
    assert r.status == 400  # an unknown kind: Synapse's M_UNRECOGNIZED
    r = await put(app_client, token, "override/x", {"actions": [], "conditions": "nope"})
    assert r.status == 400
    r = await app_client.put(f"{BASE}/global/override/x", data=b"{not json", headers=auth(token))
    assert r.status == 400 and (await r.json())["errcode"] == "M_NOT_JSON"


async def test_paths_are_read_as_synapse_reads_them(app_client) -> None:
    """Trailing slashes select a level; an unknown scope, kind or attribute (or a missing
    slash) is 400 M_UNRECOGNIZED; an unknown rule is 404 M_NOT_FOUND."""
    _, token, _ = await make_user(app_client, "dora")
    h = auth(token)

    async def get(path: str) -> tuple[int, object]:
        r = await app_client.get(f"{BASE}{path}", headers=h)
        return r.status, await r.json()

    status, everything = await get("/")
    assert status == 200 and set(everything) == {"global"}
    status, scope = await get("/global/")
    assert status == 200 and scope == everything["global"]
    status, override = await get("/global/override/")
    assert status == 200 and override == everything["global"]["override"]
    assert override[0]["rule_id"] == ".m.rule.master"
    status, rule = await get("/global/override/.m.rule.master")
    assert (status, rule) == (200, override[0])
    assert await get("/global/override/.m.rule.master/enabled") == (200, {"enabled": False})
    assert await get("/global/override/.m.rule.master/actions") == (200, {"actions": []})
    for bad in ("", "/bogus/", "/global", "/global/bogus/", "/global/override"):
        status, body = await get(bad)
        assert (status, body["errcode"]) == (400, "M_UNRECOGNIZED"), bad
    status, body = await get("/global/override/.m.rule.master/bogus")
    assert (status, body["errcode"]) == (400, "M_UNRECOGNIZED")
    status, body = await get("/global/override/nope")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for path in ("/device/override/x", "/global/bogus/x", "/global/room/!r:x/bogus"):
        r = await app_client.put(f"{BASE}{path}", json={"actions": []}, headers=h)
        assert (r.status, (await r.json())["errcode"]) == (400, "M_UNRECOGNIZED"), path
