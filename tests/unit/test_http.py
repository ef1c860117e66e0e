"""The edge helpers in homeserver.http: strict JSON bodies, params, error rendering."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from homeserver.errors import MatrixError
from homeserver.http import (
    MAX_BODY_KEY,
    encode_json,
    error_middleware,
    json_response,
    parse_json_bytes,
    path_param,
    query_param,
    read_json_body,
)
from homeserver.ids import validate_room_id


async def echo(request: web.Request) -> web.Response:
    return json_response({"body": await read_json_body(request)})


async def echo_optional(request: web.Request) -> web.Response:
    return json_response({"body": await read_json_body(request, allow_empty=True)})


async def room(request: web.Request) -> web.Response:
    room_id = path_param(request, "room_id", validate_room_id)
    limit = query_param(request, "limit", int, default=10)
    return json_response({"room_id": room_id, "limit": limit})


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail")


async def matrix_error(request: web.Request) -> web.Response:
    raise MatrixError(403, "M_FORBIDDEN", "nope", extra_field=1)


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    app = web.Application(middlewares=[error_middleware])
    app[MAX_BODY_KEY] = 1024
    app.router.add_post("/echo", echo)
    app.router.add_post("/echo-optional", echo_optional)
    app.router.add_get("/rooms/{room_id}", room)
    app.router.add_get("/boom", boom)
    app.router.add_get("/forbidden", matrix_error)
    return await aiohttp_client(app)


async def post_raw(client: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/echo", data=body)
    return response.status, await response.json()


async def test_valid_body_round_trips(client: Any) -> None:
    body = '{"a": [1, 2.5, true, null, "\\ud83d\\ude00 é"], "b": {}}'.encode()
    status, answer = await post_raw(client, body)
    assert status == 200
    assert answer == {"body": {"a": [1, 2.5, True, None, "😀 é"], "b": {}}}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"{'a': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1e99999}',
        b'{"a": "\\ud800"}',
        b'{"\\udc00": 1}',
        b'{"a": "\xff\xfe"}',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
    ],
)
async def test_not_json(client: Any, body: bytes) -> None:
    status, answer = await post_raw(client, body)
    assert status == 400
    assert answer["errcode"] == "M_NOT_JSON"


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"3", b"null"])
async def test_top_level_must_be_an_object(client: Any, body: bytes) -> None:
    assert await post_raw(client, body) == (
        400,
        {"errcode": "M_BAD_JSON", "error": "Content must be a JSON object"},
    )


async def test_too_large(client: Any) -> None:
    status, answer = await post_raw(client, b'{"a": "' + b"x" * 2000 + b'"}')
    assert (status, answer["errcode"]) == (413, "M_TOO_LARGE")

    async def chunks() -> Any:  # no Content-Length: the streaming limit must still hold
        for _ in range(5):
            yield b" " * 400

    response = await client.post("/echo", data=chunks())
    assert response.status == 413
    assert (await response.json())["errcode"] == "M_TOO_LARGE"


def test_huge_integer_is_not_json() -> None:
    with pytest.raises(MatrixError) as info:  # beyond Python's int digit limit
        parse_json_bytes(b'{"a": ' + b"1" * 5000 + b"}")
    assert info.value.errcode == "M_NOT_JSON"


def test_nesting_depth() -> None:
    assert parse_json_bytes(b"[" * 100 + b"]" * 100) == parse_json_bytes(b"[" * 100 + b"]" * 100)
    for depth in (101, 100_000):
        with pytest.raises(MatrixError) as info:
            parse_json_bytes(b"[" * depth + b"]" * depth)
        assert info.value.errcode == "M_NOT_JSON"


async def test_optional_body(client: Any) -> None:
    response = await client.post("/echo-optional", data=b"")
    assert (response.status, await response.json()) == (200, {"body": {}})


async def test_path_and_query_params(client: Any) -> None:
    response = await client.get("/rooms/%21abc%3Aexample.org", params={"limit": "5"})
    assert await response.json() == {"room_id": "!abc:example.org", "limit": 5}
    response = await client.get("/rooms/abc")
    assert response.status == 400
    body = await response.json()
    assert body["errcode"] == "M_INVALID_PARAM"
    assert body["error"].startswith("Invalid room_id: room ID must be")
    response = await client.get("/rooms/%21a%3Ab", params={"limit": "ten"})
    assert (response.status, (await response.json())["errcode"]) == (400, "M_INVALID_PARAM")


async def test_errors_are_rendered_as_matrix_json(client: Any) -> None:
    response = await client.get("/forbidden")
    assert response.status == 403
    assert await response.json() == {"errcode": "M_FORBIDDEN", "error": "nope", "extra_field": 1}
    response = await client.get("/boom")
    assert response.status == 500
    assert await response.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_json_output_is_compact_utf8_and_strict() -> None:
    assert encode_json({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    # Never invalid JSON: NaN (which no input can carry) comes out as null.
    assert encode_json({"a": float("nan")}) == b'{"a":null}'
    # Integers beyond 64 bits (old rooms' events) and non-string keys still encode.
    assert encode_json({"big": 2**70, 1: "x"}) == b'{"big":1180591620717411303424,"1":"x"}'
    response = json_response({"x": 1}, status=201)
    assert response.status == 201 and response.headers["Content-Type"] == "application/json"
