"""Who may call the admin API, and what bad input gets, for every admin route.

The routes are read from the app's own router, so an endpoint added later (by any
area) is checked without anyone listing it here: without a token it must answer
401 M_MISSING_TOKEN, with a non-admin's token 403 M_FORBIDDEN, and nothing it does
may happen. Malformed IDs are 400, unknown users and rooms 404 M_NOT_FOUND.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from homeserver.appstate import STORES
from tests.admin.conftest import AdminEnv

# Public by design (as in Synapse): the version, and shared-secret registration,
# which authenticates with its HMAC instead of a token.
PUBLIC = {("GET", "/v1/server_version"), ("GET", "/v1/register"), ("POST", "/v1/register")}

SAMPLE = {
    "user_id": "@bob:test.local",
    "room_id": "!nowhere:test.local",
    "event_id": "$event",
    "device_id": "BOBDEV",
    "report_id": "1",
    "token": "abcd",
    "delete_id": "nope",
    "purge_id": "nope",
    "destination": "other.example",
    "txn_id": "t1",
}


def admin_routes(env: AdminEnv) -> list[tuple[str, str]]:
    root: web.Application = env.client.server.app
    admin = next(
        a
        for r in root.router.resources()
        if (a := getattr(r, "_app", None)) is not None and r.canonical == "/_synapse/admin"
    )
    routes = []
    for route in admin.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        path = route.resource.canonical.removeprefix("/_synapse/admin") if route.resource else ""
        if (route.method, path) in PUBLIC:
            continue
        routes.append((route.method, path))
    return sorted(set(routes))


def fill(path: str) -> str:
    """A concrete path: known parameters get plausible values, others (routes other
    areas add later, e.g. media IDs) a placeholder."""
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: SAMPLE.get(m.group(1), "x"), path)


async def test_every_admin_route_refuses_missing_tokens_and_non_admins(env: AdminEnv) -> None:
    routes = admin_routes(env)
    assert len(routes) > 60, routes  # the whole API, not a few stray routes
    for method, path in routes:
        body: Any = {} if method in ("POST", "PUT", "DELETE") else None
        status, answer = await env.call(method, fill(path), token=None, json=body)
        assert (status, answer["errcode"]) == (401, "M_MISSING_TOKEN"), (method, path, answer)
        status, answer = await env.call(method, fill(path), token="user", json=body)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), (method, path, answer)
        status, answer = await env.call(method, fill(path), token="not-a-token", json=body)
        assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN"), (method, path, answer)
    # The refused calls changed nothing: bob is still a plain, active user.
    user = await env.client.server.app[STORES].accounts.get_user(env.user_id)
    assert user is not None and not user.is_admin and not user.deactivated


async def test_the_public_version_endpoint(env: AdminEnv) -> None:
    status, body = await env.call("GET", "/v1/server_version", token=None)
    assert status == 200 and isinstance(body["server_version"], str)


MALFORMED_USER = [
    ("GET", "/v2/users/{}"),
    ("PUT", "/v2/users/{}"),
    ("POST", "/v1/deactivate/{}"),
    ("POST", "/v1/reset_password/{}"),
    ("GET", "/v1/whois/{}"),
    ("GET", "/v2/users/{}/devices"),
    ("GET", "/v1/users/{}/joined_rooms"),
    ("GET", "/v1/users/{}/pushers"),
    ("POST", "/v1/users/{}/shadow_ban"),
    ("GET", "/v1/users/{}/override_ratelimit"),
    ("POST", "/v1/users/{}/login"),
    ("PUT", "/v1/suspend/{}"),
]
MALFORMED_ROOM = [
    ("GET", "/v1/rooms/{}"),
    ("GET", "/v1/rooms/{}/members"),
    ("GET", "/v1/rooms/{}/state"),
    ("GET", "/v1/rooms/{}/messages"),
    ("GET", "/v1/rooms/{}/forward_extremities"),
    ("PUT", "/v1/rooms/{}/block"),
    ("DELETE", "/v2/rooms/{}"),
    ("POST", "/v1/purge_history/{}"),
    ("POST", "/v1/rooms/{}/make_room_admin"),
]


@pytest.mark.parametrize("bad", ["not-a-user", "@nocolon", "@:empty"])
async def test_malformed_user_ids_are_400(env: AdminEnv, bad: str) -> None:
    for method, path in MALFORMED_USER:
        body = {"new_password": "x", "suspend": True} if method in ("POST", "PUT") else None
        status, answer = await env.call(method, path.format(quote(bad, safe="@:!")), json=body)
        assert status == 400, (method, path, answer)
        assert answer["errcode"] == "M_INVALID_PARAM", (method, path, answer)


@pytest.mark.parametrize("bad", ["nowhere", "!", "! space:x", "#alias-where-an-id-goes"])
async def test_malformed_room_ids_are_400(env: AdminEnv, bad: str) -> None:
    for method, path in MALFORMED_ROOM:
        if bad.startswith("#") and "forward_extremities" in path or "make_room_admin" in path:
            continue  # these take aliases too (an unknown one is a 404)
        body = {"block": True} if method in ("PUT", "POST", "DELETE") else None
        status, answer = await env.call(method, path.format(quote(bad, safe="@:!")), json=body)
        assert status == 400, (method, path, answer)
        assert answer["errcode"] == "M_INVALID_PARAM", (method, path, answer)


UNKNOWN_USER = [
    ("GET", "/v2/users/{}", None),
    ("POST", "/v1/deactivate/{}", {}),
    ("POST", "/v1/reset_password/{}", {"new_password": "pw"}),
    ("GET", "/v1/whois/{}", None),
    ("GET", "/v2/users/{}/devices", None),
    ("GET", "/v2/users/{}/devices/X", None),
    ("GET", "/v1/users/{}/pushers", None),
    ("GET", "/v1/users/{}/accountdata", None),
    ("POST", "/v1/users/{}/shadow_ban", {}),
    ("GET", "/v1/users/{}/override_ratelimit", None),
    ("POST", "/v1/users/{}/login", {}),
    ("PUT", "/v1/suspend/{}", {"suspend": True}),
    ("GET", "/v1/users/{}/admin", None),
]
UNKNOWN_ROOM = [
    ("GET", "/v1/rooms/{}", None),
    ("GET", "/v1/rooms/{}/members", None),
    ("GET", "/v1/rooms/{}/state", None),
    ("GET", "/v1/rooms/{}/messages", None),
    ("GET", "/v1/rooms/{}/forward_extremities", None),
    ("DELETE", "/v1/rooms/{}/forward_extremities", None),
    ("POST", "/v1/rooms/{}/make_room_admin", {}),
    ("DELETE", "/v2/rooms/{}", {}),
    ("GET", "/v2/rooms/{}/delete_status", None),
    ("POST", "/v1/purge_history/{}", {"purge_up_to_ts": 1}),
]


async def test_unknown_users_and_rooms_are_404(env: AdminEnv) -> None:
    for method, path, body in UNKNOWN_USER:
        status, answer = await env.call(method, path.format("@ghost:test.local"), json=body)
        assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), (method, path, answer)
    for method, path, body in UNKNOWN_ROOM:
        status, answer = await env.call(method, path.format("!ghost:test.local"), json=body)
        assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), (method, path, answer)
    status, answer = await env.call("GET", "/v1/rooms/%23ghost:test.local/forward_extremities")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


async def test_remote_users_cannot_be_changed(env: AdminEnv) -> None:
    for method, path, body in [
        ("PUT", "/v2/users/@x:elsewhere.example", {"displayname": "x"}),
        ("POST", "/v1/deactivate/@x:elsewhere.example", {}),
        ("PUT", "/v1/suspend/@x:elsewhere.example", {"suspend": True}),
    ]:
        status, answer = await env.call(method, path, json=body)
        assert status == 400, (method, path, answer)


async def test_bad_paging_and_filters_are_400(env: AdminEnv) -> None:
    for query in (
        "from=-1",
        "limit=-5",
        "from=abc",
        "order_by=password_hash",
        "dir=sideways",
        "guests=maybe",
    ):
        status, answer = await env.call("GET", f"/v2/users?{query}")
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), (query, answer)
    for query in ("order_by=room_id; DROP TABLE rooms", "public_rooms=yes"):
        status, answer = await env.call("GET", f"/v1/rooms?{query}")
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), (query, answer)
    status, answer = await env.call("GET", "/v1/event_reports/abc")
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
