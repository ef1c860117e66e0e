"""/room_keys: version CRUD, key storage with the replacement rules, etag/count, errors."""

from __future__ import annotations

from typing import Any

from tests.client.helpers import auth, make_user

BASE = "/_matrix/client/v3/room_keys"
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.local"


def key(fmi: int, fc: int, verified: bool, tag: str) -> dict[str, Any]:
    return {
        "first_message_index": fmi,
        "forwarded_count": fc,
        "is_verified": verified,
        "session_data": {"ciphertext": tag},
    }


async def call(client: Any, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    response = await client.request(method, BASE + path, headers=auth(token), **kw)
    return response.status, await response.json()


async def test_backup_versions_crud(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    _, other, _ = await make_user(app_client, "bob")
    assert (await call(app_client, "GET", "/version", token))[1]["errcode"] == "M_NOT_FOUND"
    status, body = await call(
        app_client, "POST", "/version", token, json={"algorithm": ALG, "auth_data": {"pk": "a"}}
    )
    assert (status, body) == (200, {"version": "1"})
    status, body = await call(app_client, "GET", "/version", token)
    assert body == {
        "algorithm": ALG,
        "auth_data": {"pk": "a"},
        "count": 0,
        "etag": "0",
        "version": "1",
    }
    # Other users do not see it.
    assert (await call(app_client, "GET", "/version/1", other))[0] == 404

    status, body = await call(
        app_client,
        "PUT",
        "/version/1",
        token,
        json={"algorithm": ALG, "auth_data": {"pk": "b"}, "version": "1"},
    )
    assert (status, body) == (200, {})
    assert (await call(app_client, "GET", "/version/1", token))[1]["auth_data"] == {"pk": "b"}
    status, body = await call(
        app_client, "PUT", "/version/1", token, json={"algorithm": "other", "auth_data": {}}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await call(
        app_client,
        "PUT",
        "/version/1",
        token,
        json={"algorithm": ALG, "auth_data": {}, "version": "2"},
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    status, body = await call(
        app_client, "POST", "/version", token, json={"algorithm": ALG, "auth_data": {}}
    )
    assert body == {"version": "2"}
    assert (await call(app_client, "GET", "/version", token))[1]["version"] == "2"
    assert await call(app_client, "DELETE", "/version/2", token) == (200, {})
    assert (await call(app_client, "GET", "/version", token))[1]["version"] == "1"
    assert (await call(app_client, "GET", "/version/2", token))[1]["errcode"] == "M_NOT_FOUND"
    assert (await call(app_client, "DELETE", "/version/2", token))[0] == 404
    assert (await call(app_client, "GET", "/version/junk", token))[0] == 404
    # Numbers are never reused.
    status, body = await call(
        app_client, "POST", "/version", token, json={"algorithm": ALG, "auth_data": {}}
    )
    assert body == {"version": "3"}

    for bad in ({"algorithm": 1, "auth_data": {}}, {"algorithm": ALG}, {}):
        status, body = await call(app_client, "POST", "/version", token, json=bad)
        assert status == 400 and body["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM"), bad
    # auth_data is the client's opaque JSON, of any type (as Synapse stores it).
    for opaque in ("x", [1, {"a": None}], 5):
        status, body = await call(
            app_client, "POST", "/version", token, json={"algorithm": ALG, "auth_data": opaque}
        )
        assert status == 200, body
        status, got = await call(app_client, "GET", f"/version/{body['version']}", token)
        assert got["auth_data"] == opaque


async def test_backup_keys_replacement_rules(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    await call(app_client, "POST", "/version", token, json={"algorithm": ALG, "auth_data": {}})
    v = {"version": "1"}

    status, body = await call(
        app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=key(5, 1, False, "a")
    )
    assert (status, body) == (200, {"etag": "1", "count": 1})
    # Worse (higher index) is ignored; the etag does not move.
    status, body = await call(
        app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=key(6, 0, False, "b")
    )
    assert body == {"etag": "1", "count": 1}
    # Lower index wins.
    status, body = await call(
        app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=key(3, 2, False, "c")
    )
    assert body == {"etag": "2", "count": 1}
    # Same index, lower forwarded_count wins.
    await call(app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=key(3, 0, False, "d"))
    # Verified beats unverified even with a worse index; unverified never beats verified.
    await call(app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=key(9, 9, True, "e"))
    await call(app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=key(0, 0, False, "f"))
    status, body = await call(app_client, "GET", f"/keys/{ROOM}/s1", token, params=v)
    assert body == key(9, 9, True, "e")

    # Bulk forms.
    status, body = await call(
        app_client,
        "PUT",
        f"/keys/{ROOM}",
        token,
        params=v,
        json={"sessions": {"s2": key(0, 0, True, "g")}},
    )
    assert body["count"] == 2
    status, body = await call(
        app_client,
        "PUT",
        "/keys",
        token,
        params=v,
        json={"rooms": {"!other:test.local": {"sessions": {"s3": key(1, 0, False, "h")}}}},
    )
    assert body["count"] == 3
    etag = body["etag"]
    status, body = await call(app_client, "GET", "/keys", token, params=v)
    assert body == {
        "rooms": {
            ROOM: {"sessions": {"s1": key(9, 9, True, "e"), "s2": key(0, 0, True, "g")}},
            "!other:test.local": {"sessions": {"s3": key(1, 0, False, "h")}},
        }
    }
    status, body = await call(app_client, "GET", "/version/1", token)
    assert (body["count"], body["etag"]) == (3, etag)
    assert (await call(app_client, "GET", "/keys/!none:test.local", token, params=v))[1] == {
        "sessions": {}
    }
    assert (await call(app_client, "GET", f"/keys/{ROOM}/nope", token, params=v))[0] == 404

    status, body = await call(app_client, "DELETE", f"/keys/{ROOM}/s1", token, params=v)
    assert body["count"] == 2 and body["etag"] != etag
    status, body = await call(app_client, "DELETE", f"/keys/{ROOM}", token, params=v)
    assert body["count"] == 1
    status, body = await call(app_client, "DELETE", "/keys", token, params=v)
    assert body["count"] == 0
    assert (await call(app_client, "GET", "/keys", token, params=v))[1] == {"rooms": {}}


async def test_backup_wrong_version_and_bad_input(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    status, body = await call(
        app_client,
        "PUT",
        f"/keys/{ROOM}/s1",
        token,
        params={"version": "1"},
        json=key(0, 0, True, "a"),
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for _ in range(2):
        await call(app_client, "POST", "/version", token, json={"algorithm": ALG, "auth_data": {}})
    status, body = await call(
        app_client,
        "PUT",
        f"/keys/{ROOM}/s1",
        token,
        params={"version": "1"},
        json=key(0, 0, True, "a"),
    )
    assert status == 403
    assert body == {
        "errcode": "M_WRONG_ROOM_KEYS_VERSION",
        "error": "Wrong backup version.",
        "current_version": "2",
    }
    # Reading an older live version is allowed.
    assert (await call(app_client, "GET", "/keys", token, params={"version": "1"}))[1] == {
        "rooms": {}
    }
    assert (await call(app_client, "GET", "/keys", token))[1]["errcode"] == "M_MISSING_PARAM"

    v = {"version": "2"}
    for bad in (
        key(-1, 0, True, "a"),
        key(0, 0, "yes", "a"),  # type: ignore[arg-type]
        dict(key(0, 0, True, "a"), first_message_index=True),
        dict(key(0, 0, True, "a"), session_data="x"),
        {"first_message_index": 0},
    ):
        status, body = await call(app_client, "PUT", f"/keys/{ROOM}/s1", token, params=v, json=bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), bad
    status, body = await call(
        app_client, "PUT", "/keys", token, params=v, json={"rooms": {ROOM: []}}
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    assert (await call(app_client, "GET", "/version/2", token))[1]["count"] == 0
