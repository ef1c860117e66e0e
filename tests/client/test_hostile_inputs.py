"""Hostile input across every client-server route: never a 500, never a hang, never junk.

The routes are enumerated from create_app's router (all methods, every path under
/_matrix/client, /_synapse/admin and /.well-known), so a new endpoint is covered the
moment it is mounted. Each route gets hostile path parameters, hostile bodies (raw
bytes the JSON reader must refuse, and a plausible body with one field at a time
swapped for a value of the wrong type or shape) and hostile query parameters, both
as a registered user and unauthenticated (with junk access tokens). Every answer must
be < 500, JSON, and carry an `errcode` string when >= 400; each request must finish
within a few seconds; and afterwards the server must still answer /versions, /sync
and the room's state.

Routes sharing one handler (v3/r0/unstable) are fuzzed once to keep the run short.
The hostile values live in tests/client/hostile.py (shared with the federation test).
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, make_room, register_user
from tests.client.hostile import (
    HOSTILE_PATH_VALUES,
    HOSTILE_QUERIES,
    RAW_BODIES,
    Route,
    Sender,
    check_response,
    enumerate_routes,
    field_mutations,
    fill_path,
)

PREFIXES = ("/_matrix/client", "/_synapse/admin", "/.well-known")
# Requests that end the session they are sent with: fuzzed with a throw-away user.
SESSION_ENDING = re.compile(r"/(logout|logout/all|account/deactivate)$")
# Requests that end the user's life in a room: fuzzed on a scratch room.
ROOM_ENDING = re.compile(r"/(leave|forget|upgrade)$")

# Path-parameter names -> a valid value (filled in per run with real IDs).
VALID_PARAMS: dict[str, str] = {}

# Plausible bodies: each field is later replaced, one at a time, by a hostile value.
ME = "@fuzzer:test.local"
DEV = "FUZZDEV"
USER2 = "@bob:test.local"
KEY = {"user_id": ME, "usage": ["master"], "keys": {"ed25519:k": "k"}}
SESSION = {
    "first_message_index": 0,
    "forwarded_count": 0,
    "is_verified": False,
    "session_data": {"ciphertext": "x"},
}
AUTH = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "u"}}
THREEPID = {
    "client_secret": "s3cret",
    "email": "a@b.c",
    "send_attempt": 1,
    "sid": "sid",
    "threepid_creds": {"sid": "sid", "client_secret": "s3cret"},
    "medium": "email",
    "address": "a@b.c",
    # An address the outbound IP policy refuses at once (a name would be looked up
    # in DNS, which this sandbox cannot answer within the test's deadline).
    "id_server": "127.0.0.1:9",
    "auth": AUTH,
}
BASE_BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        r"/createRoom$",
        {
            "name": "n",
            "topic": "t",
            "preset": "public_chat",
            "visibility": "private",
            "invite": [USER2],
            "room_version": "10",
            "initial_state": [{"type": "m.room.topic", "state_key": "", "content": {}}],
            "creation_content": {"m.federate": True},
            "power_level_content_override": {"users_default": 0, "events": {"m.x": 0}},
            "is_direct": False,
            "room_alias_name": "al",
            "invite_3pid": [],
        },
    ),
    (r"/send/", {"msgtype": "m.text", "body": "hi", "m.relates_to": {"rel_type": "m.x"}}),
    (r"/state/", {"topic": "t", "m.topic": [{"body": "t"}]}),
    (r"/(invite|kick|ban|unban)$", {"user_id": USER2, "reason": "r"}),
    (r"/(join|knock)/", {"reason": "r", "third_party_signed": {"sender": USER2}}),
    (r"/(join|leave|forget)$", {"reason": "r"}),
    (r"/redact/", {"reason": "r"}),
    (r"/receipt/", {"thread_id": "main"}),
    (r"/read_markers$", {"m.fully_read": "$e", "m.read": "$e", "m.read.private": "$e"}),
    (r"/typing/", {"typing": True, "timeout": 30000}),
    (r"/report", {"reason": "r", "score": -100}),
    (r"/upgrade$", {"new_version": "10"}),
    (r"/directory/room/", {"room_id": "!r:test.local"}),
    (r"/directory/list/room/", {"visibility": "public"}),
    (
        r"/publicRooms$",
        {
            "limit": 10,
            "since": "s",
            "filter": {"generic_search_term": "x", "room_types": [None]},
            "include_all_networks": False,
            "third_party_instance_id": "x",
        },
    ),
    (r"/user_directory/search$", {"search_term": "a", "limit": 10}),
    (r"/profile/", {"displayname": "x", "avatar_url": "mxc://a/b"}),
    (r"/presence/", {"presence": "online", "status_msg": "x"}),
    (r"/tags/", {"order": 0.5}),
    (r"/account_data/", {"a": 1}),
    (
        r"/filter$",
        {
            "room": {
                "timeline": {"limit": 10, "types": ["m.room.message"], "rooms": ["!r:a"]},
                "state": {"lazy_load_members": True, "not_senders": ["@a:b"]},
                "include_leave": False,
            },
            "event_fields": ["content"],
            "event_format": "client",
            "presence": {"not_types": ["*"]},
        },
    ),
    (r"/sendToDevice/", {"messages": {ME: {DEV: {"a": 1}}}}),
    (
        r"/keys/upload",
        {
            "device_keys": {
                "user_id": ME,
                "device_id": DEV,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": {"curve25519:" + DEV: "k", "ed25519:" + DEV: "k"},
                "signatures": {ME: {"ed25519:" + DEV: "s"}},
            },
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "k", "signatures": {}}},
            "fallback_keys": {"signed_curve25519:AAAB": {"key": "k", "fallback": True}},
        },
    ),
    (r"/keys/query$", {"device_keys": {ME: [DEV]}, "timeout": 10000}),
    (r"/keys/claim$", {"one_time_keys": {ME: {DEV: "signed_curve25519"}}}),
    (
        r"/keys/device_signing/upload$",
        {"master_key": KEY, "self_signing_key": KEY, "user_signing_key": KEY, "auth": AUTH},
    ),
    (r"/keys/signatures/upload$", {ME: {DEV: KEY}}),
    (
        r"/room_keys/version",
        {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "x"}},
    ),
    (r"/room_keys/keys$", {"rooms": {"!r:test.local": {"sessions": {"s": SESSION}}}}),
    (r"/room_keys/keys/[^/]+$", {"sessions": {"s": SESSION}}),
    (r"/room_keys/keys/[^/]+/[^/]+$", SESSION),
    (
        r"/pushers/set$",
        {
            "pushkey": "k",
            "kind": "http",
            "app_id": "a",
            "app_display_name": "a",
            "device_display_name": "d",
            "profile_tag": "p",
            "lang": "en",
            "data": {"url": "https://x.example/_matrix/push/v1/notify", "format": "x"},
            "append": False,
        },
    ),
    (r"/pushrules/.*/actions$", {"actions": ["notify", {"set_tweak": "sound"}]}),
    (r"/pushrules/.*/enabled$", {"enabled": True}),
    (
        r"/pushrules/",
        {
            "actions": ["notify"],
            "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "x"}],
            "pattern": "x",
        },
    ),
    (
        r"/register$",
        {
            "username": "fuzzed",
            "password": "p",
            "auth": {"type": "m.login.dummy", "session": "s"},
            "device_id": "D",
            "initial_device_display_name": "d",
            "inhibit_login": False,
            "refresh_token": False,
        },
    ),
    (
        r"/login$",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "u"},
            "password": "p",
            "device_id": "D",
            "initial_device_display_name": "x",
            "refresh_token": False,
            "token": "t",
        },
    ),
    (r"/refresh$", {"refresh_token": "x"}),
    (r"/account/password$", {"new_password": "x", "logout_devices": False, "auth": AUTH}),
    (r"/deactivate$", {"auth": AUTH, "erase": False, "id_server": "x"}),
    (r"/(3pid|requestToken)", THREEPID),
    (r"/devices/", {"display_name": "x"}),
    (r"/delete_devices$", {"devices": ["D"], "auth": AUTH}),
    (r"/login/get_token$", {"auth": AUTH}),
    (
        r"/_synapse/admin/v1/register$",
        {"nonce": "n", "username": "u", "password": "p", "admin": False, "mac": "m"},
    ),
]


def base_body(path: str) -> dict[str, Any]:
    for pattern, body in BASE_BODIES:
        if re.search(pattern, path):
            return body
    return {}


async def _setup(client: TestClient) -> dict[str, str]:
    """A registered user in a room with one message; valid path values for the run."""
    me = await register_user(client, "fuzzer", device_id=DEV)
    assert me["user_id"] == ME
    token = me["access_token"]
    room_id = await make_room(client, me["user_id"])
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t0",
        json={"msgtype": "m.text", "body": "hello"},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()
    event_id = (await resp.json())["event_id"]
    user_id, device_id = me["user_id"], me["device_id"]
    upload = await client.post(
        "/_matrix/media/v3/upload",
        data=b"fuzz",
        headers={**auth(token), "Content-Type": "text/plain"},
    )
    assert upload.status == 200, await upload.text()
    media_id = (await upload.json())["content_uri"].rsplit("/", 1)[1]
    VALID_PARAMS.update(
        {
            # Our own media: a remote server name would make the server fetch over
            # federation, which on this isolated test server answers 502 (as Synapse).
            "server_name": "test.local",
            "media_id": media_id,
            "user_id": user_id,
            "userId": user_id,
            "room_id": room_id,
            "roomId": room_id,
            "room_id_or_alias": room_id,
            "scratch_room": await make_room(client, user_id),
            "room_alias": "#fuzz:test.local",
            "event_id": event_id,
            "eventId": event_id,
            "device_id": device_id,
            "deviceId": device_id,
            "key": "displayname",
            "kind": "override",
            "rule_id": "my.rule",
            "receiptType": "m.read",
            "event_type": "m.room.topic",
            "eventType": "m.test",
            "state_key": "",
            "txn_id": "txn",
            "txnId": "txn",
            "type": "m.test",
            "filterId": "0",
            "tag": "u.work",
            "sessionId": "sess",
            "version": "1",
            "protocol": "irc",
            "rel_type": "m.thread",
        }
    )
    return {"token": token, "room_id": room_id, "user_id": user_id}


def _unique_by_handler(routes: list[Route]) -> list[Route]:
    """One route per (method, handler): the v3/r0/unstable aliases share their code."""
    seen: set[tuple[str, Any]] = set()
    out = []
    for route in routes:
        marker = (route.method, route.handler)
        if marker not in seen:
            seen.add(marker)
            out.append(route)
    return out


_txn_counter = itertools.count()


def _fresh_txn(values: dict[str, str]) -> dict[str, str]:
    """A new transaction ID per request, so idempotency never answers from the cache."""
    txn = f"txn{next(_txn_counter)}"
    return {**values, "txn_id": txn, "txnId": txn}


async def _fuzz_route(
    send: Sender, route: Route, headers: dict[str, str], rng: random.Random
) -> None:
    """Hostile path values, raw bodies, field mutations and queries for one route."""
    params = VALID_PARAMS
    if ROOM_ENDING.search(route.path):  # keep the main room usable for the final checks
        params = {**VALID_PARAMS, "room_id": VALID_PARAMS["scratch_room"]}

    def path() -> str:
        return fill_path(route.path, _fresh_txn(params))

    body = base_body(route.path)
    has_body = route.method in ("POST", "PUT", "DELETE")
    data = json.dumps(body).encode() if has_body else None
    for name in route.params:
        for value in HOSTILE_PATH_VALUES:
            bad = fill_path(route.path, {**_fresh_txn(params), name: value}, raw={name})
            await send(route.method, bad, data, headers)
    if has_body:
        for raw in RAW_BODIES:
            await send(route.method, path(), raw, headers)
        for mutated in field_mutations(body, rng, max_mutations=14):
            await send(route.method, path(), json.dumps(mutated).encode(), headers)
    for query in HOSTILE_QUERIES:
        await send(route.method, f"{path()}?{query}", data, headers)


def _config(tmp_config: Callable[..., Config], **settings: Any) -> Config:
    return tmp_config(public_baseurl="https://test.local/", serve_server_wellknown=True, **settings)


async def test_every_client_route_survives_hostile_input(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(_config(tmp_config, **database_settings)))
    ctx = await _setup(client)
    token = ctx["token"]
    routes = enumerate_routes(client.app, PREFIXES)
    assert len(routes) > 150  # the enumeration really walked the sub-apps
    assert any(r.path.startswith("/.well-known/matrix/") for r in routes)
    send = Sender(client)
    rng = random.Random(1234)

    ending = [r for r in routes if SESSION_ENDING.search(r.path)]
    ordinary = [r for r in _unique_by_handler(routes) if r not in ending]

    # As the registered user.
    for route in ordinary:
        await _fuzz_route(send, route, auth(token), rng)
    # Unauthenticated, and with junk access tokens.
    for route in routes:
        path = fill_path(route.path, VALID_PARAMS)
        data = json.dumps(base_body(route.path)).encode() if route.method != "GET" else None
        for headers, suffix in JUNK_TOKENS:
            sep = "&" if "?" in path else "?"
            await send(route.method, path + (sep + suffix if suffix else ""), data, headers)
    # Routes open without a token get the full treatment unauthenticated as well.
    for route in ordinary:
        status, _ = await send(route.method, fill_path(route.path, VALID_PARAMS), None, {})
        if status != 401:
            await _fuzz_route(send, route, {}, rng)
    # Session-ending routes, each with a throw-away user.
    for i, route in enumerate(_unique_by_handler(ending)):
        throwaway = await register_user(client, f"throwaway{i}")
        await _fuzz_route(send, route, auth(throwaway["access_token"]), rng)

    assert not send.failures, "\n".join(send.failures[:60]) + f"\n({len(send.failures)} total)"
    assert send.count > 3000

    # Still healthy: versions, a sync, the room's state and timeline, and a new message.
    resp = await client.get("/_matrix/client/versions")
    assert resp.status == 200 and "versions" in await resp.json()
    resp = await client.get("/_matrix/client/v3/sync", headers=auth(token))
    assert resp.status == 200, await resp.text()
    synced = await resp.json()
    assert isinstance(synced["next_batch"], str)
    # Whatever was accepted is well-formed on the way out.
    for section in ("to_device", "account_data", "presence"):
        for event in synced.get(section, {}).get("events", []):
            assert isinstance(event["type"], str) and isinstance(event["content"], dict), event
    room = ctx["room_id"]
    resp = await client.get(f"/_matrix/client/v3/rooms/{room}/state", headers=auth(token))
    assert resp.status == 200, await resp.text()
    types = {e["type"] for e in await resp.json()}
    assert {"m.room.create", "m.room.member", "m.room.power_levels"} <= types
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room}/send/m.room.message/after",
        json={"msgtype": "m.text", "body": "still here"},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()


JUNK_TOKENS: list[tuple[dict[str, str], str]] = [
    ({}, ""),
    ({"Authorization": "Bearer"}, ""),
    ({"Authorization": "Bearer "}, ""),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, ""),
    ({"Authorization": "Bearer tok%00en%FF"}, ""),
    ({"Authorization": "Bearer \u00fc\u2603"}, ""),
    ({"Authorization": "Bearer " + "A" * 4000}, ""),
    ({}, "access_token=%FF%FE%00"),
    ({}, "access_token=%ED%A0%80"),
    ({}, "access_token=%E2%98%83&access_token=x"),
    ({"Authorization": "Bearer a"}, "access_token=b"),
]


# --------------------------------------------------------------------------- edges


async def test_body_over_the_limit_is_413_too_large(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(tmp_config(max_request_body=4096)))
    token = (await register_user(client, "big"))["access_token"]
    big = json.dumps({"a": "x" * 5000}).encode()
    for path in ("/_matrix/client/v3/createRoom", "/_matrix/client/v3/user_directory/search"):
        resp = await client.post(path, data=big, headers=auth(token))
        assert resp.status == 413, await resp.text()
        assert (await resp.json())["errcode"] == "M_TOO_LARGE"

    # Chunked (no Content-Length): refused while streaming too.
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post("/_matrix/client/v3/createRoom", data=chunks(), headers=auth(token))
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"


async def test_bom_and_non_utf8_bodies_are_not_json(app_client: TestClient) -> None:
    token = (await register_user(app_client, "bom"))["access_token"]
    bodies = [
        b"\xef\xbb\xbf{}",  # UTF-8 BOM before a valid object
        '{"name": "caf\u00e9"}'.encode("latin-1"),  # Latin-1, not UTF-8
        '{"name": "x"}'.encode("utf-16"),
        b'{"name": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
    ]
    for data in bodies:
        resp = await app_client.post(
            "/_matrix/client/v3/createRoom", data=data, headers=auth(token)
        )
        assert resp.status == 400, (data, await resp.text())
        assert (await resp.json())["errcode"] == "M_NOT_JSON"


async def test_content_type_is_ignored(app_client: TestClient) -> None:
    token = (await register_user(app_client, "ctype"))["access_token"]
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "image/png", None):
        headers = auth(token)
        if content_type:
            headers["Content-Type"] = content_type
        resp = await app_client.post(
            "/_matrix/client/v3/createRoom", data=b'{"name": "typed"}', headers=headers
        )
        assert resp.status == 200, (content_type, await resp.text())
        assert (await resp.json())["room_id"].startswith("!")


async def test_power_levels_with_hostile_values_are_refused(app_client: TestClient) -> None:
    """Values of the wrong type inside power levels never get into the room's state."""
    me = await register_user(app_client, "pl")
    token, room = me["access_token"], await make_room(app_client, me["user_id"])
    path = f"/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"
    good = {"users": {me["user_id"]: 100}, "users_default": 0, "events": {}}
    hostile = [
        {**good, "users": {me["user_id"]: "100"}},
        {**good, "users": {me["user_id"]: 2**64}},
        {**good, "users": {me["user_id"]: 1.5}},
        {**good, "users": []},
        {**good, "users_default": True},
        {**good, "events": {"m.room.name": None}},
        {**good, "ban": "50"},
        {**good, "notifications": {"room": []}},
        {**good, "users": {"not a user id": 50}},
    ]
    for content in hostile:
        resp = await app_client.put(path, json=content, headers=auth(token))
        assert 400 <= resp.status < 500, (content, await resp.text())
        assert isinstance((await resp.json())["errcode"], str)
    resp = await app_client.get(path, headers=auth(token))
    assert (await resp.json())["users"] == {me["user_id"]: 100}


def test_field_mutations_cover_every_field() -> None:
    """The mutator really swaps each nested field (so the fuzz test can find something)."""
    base = {"a": "x", "b": {"c": 1, "d": ["e"]}}
    mutated = field_mutations(base, random.Random(0), max_mutations=100)
    changed = set()
    for body in mutated:
        if body.get("a") != "x":
            changed.add("a")
        if isinstance(body.get("b"), dict):
            if body["b"].get("c") != 1:
                changed.add("b.c")
            if body["b"].get("d") != ["e"]:
                changed.add("b.d")
        else:
            changed.add("b")
    assert changed == {"a", "b", "b.c", "b.d"}
    assert base == {"a": "x", "b": {"c": 1, "d": ["e"]}}  # not modified in place


def test_check_response_flags_bad_answers() -> None:
    assert check_response(500, "application/json", b'{"errcode":"M_UNKNOWN"}')
    assert check_response(400, "text/plain", b"400: Bad Request")
    assert check_response(400, "application/json", b'{"error":"no code"}')
    assert check_response(404, "application/json", b'{"errcode":"M_NOT_FOUND"}') is None
    assert check_response(200, "application/json", b"{}") is None


async def test_event_just_under_the_content_limit_is_413_not_500(app_client: TestClient) -> None:
    """Content under 64 KiB whose event envelope pushes the PDU over the limit."""
    me = await register_user(app_client, "edge")
    room = await make_room(app_client, me["user_id"])
    base = f"/_matrix/client/v3/rooms/{room}"
    for n, expected in ((60_000, 200), (65_000, 413), (65_520, 413), (70_000, 413)):
        resp = await app_client.put(
            f"{base}/send/m.room.message/t{n}",
            json={"body": "a" * n},
            headers=auth(me["access_token"]),
        )
        assert resp.status == expected, (n, await resp.text())
        if expected == 413:
            assert (await resp.json())["errcode"] == "M_TOO_LARGE"
    resp = await app_client.put(
        f"{base}/state/m.room.topic",
        json={"topic": "t", "n": 2**64},
        headers=auth(me["access_token"]),
    )
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"
