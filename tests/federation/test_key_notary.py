"""The key server acting as a notary (`/_matrix/key/v2/query`), and our keyring using
a configured notary (`trusted_key_servers`) when the origin is unreachable.

Loopback servers: A is the notary, C the origin whose keys are asked for, B trusts A.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, get_verify_key
from signedjson.sign import verify_signed_json

from federation.appkeys import KEYRING, SERVER_KEYS
from tests.federation.multiserver import LoopbackServer


def _key_of(server: LoopbackServer) -> tuple[str, Any]:
    key = server.app[SERVER_KEYS].primary
    return f"ed25519:{key.version}", get_verify_key(key)


def _assert_signed_by(doc: dict[str, Any], server: LoopbackServer) -> None:
    key_id, vk = _key_of(server)
    vk.alg, vk.version = key_id.split(":")
    verify_signed_json(doc, server.name, vk)  # raises SignatureVerifyException


async def _post(server: LoopbackServer, body: Any) -> tuple[int, Any]:
    async with server.http.post(f"http://{server.name}/_matrix/key/v2/query", json=body) as r:
        return r.status, await r.json()


async def _get(server: LoopbackServer, path: str) -> tuple[int, Any]:
    async with server.http.get(f"http://{server.name}/_matrix/key/v2{path}") as r:
        return r.status, await r.json()


async def test_notary_answers_for_others_and_itself(loopback) -> None:
    a = await loopback("a")
    c = await loopback("c")
    c_key_id, c_vk = _key_of(c)

    status, body = await _post(a, {"server_keys": {c.name: {}}})
    assert status == 200, body
    (doc,) = body["server_keys"]
    assert doc["server_name"] == c.name
    assert doc["verify_keys"] == {c_key_id: {"key": encode_verify_key_base64(c_vk)}}
    assert set(doc["signatures"]) == {c.name, a.name}
    _assert_signed_by(doc, c)  # the origin's own signature survives
    _assert_signed_by(doc, a)  # and the notary added its own
    assert doc["valid_until_ts"] > int(time.time() * 1000)

    # Asked about itself, the notary answers with its own self-signed document.
    status, body = await _get(a, f"/query/{a.name}")
    assert status == 200
    (own,) = body["server_keys"]
    assert own["server_name"] == a.name and set(own["signatures"]) == {a.name}
    _assert_signed_by(own, a)

    # The GET form serves the cached document (C is down now: no fetch is needed).
    await c.stop()
    status, body = await _get(a, f"/query/{c.name}?minimum_valid_until_ts=0")
    assert status == 200
    assert [d["verify_keys"] for d in body["server_keys"]] == [doc["verify_keys"]]
    # The deprecated form naming a key ID answers the same (an expired document is
    # still returned when nothing newer can be had).
    far_future = int(time.time() * 1000) + 10 * 365 * 86_400_000
    status, body = await _get(a, f"/query/{c.name}/{c_key_id}?minimum_valid_until_ts={far_future}")
    assert status == 200
    assert [d["verify_keys"] for d in body["server_keys"]] == [doc["verify_keys"]]

    # An unreachable server we know nothing about is left out; no servers -> [].
    status, body = await _post(a, {"server_keys": {"127.0.0.1:1": {}}})
    assert (status, body) == (200, {"server_keys": []})
    assert await _post(a, {"server_keys": {}}) == (200, {"server_keys": []})


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"server_keys": []},
        {"server_keys": {"x.test": []}},
        {"server_keys": {"x.test": {"ed25519:a": "soon"}}},
        {"server_keys": {"x.test": {"ed25519:a": {"minimum_valid_until_ts": "1"}}}},
        {"server_keys": {"x.test": {"ed25519:a": {"minimum_valid_until_ts": True}}}},
        {"server_keys": {f"s{i}.test": {} for i in range(101)}},
    ],
)
async def test_bad_bulk_queries_are_400(app_client, body) -> None:
    resp = await app_client.post("/_matrix/key/v2/query", json=body)
    assert resp.status == 400
    assert (await resp.json())["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")


async def test_bad_minimum_valid_until_ts_is_400(app_client) -> None:
    resp = await app_client.get("/_matrix/key/v2/query/x.test?minimum_valid_until_ts=soon")
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")


async def test_keyring_falls_back_to_a_trusted_notary(loopback) -> None:
    a = await loopback("a")
    c = await loopback("c")
    c_key_id, c_vk = _key_of(c)
    # The notary learns C's keys while C is up, then C goes away.
    status, body = await _post(a, {"server_keys": {c.name: {}}})
    assert status == 200 and len(body["server_keys"]) == 1
    await c.stop()

    a_key_id, a_vk = _key_of(a)
    trusted = [{"server_name": a.name, "verify_keys": {a_key_id: encode_verify_key_base64(a_vk)}}]
    b = await loopback("b", trusted_key_servers=trusted)
    found = await b.app[KEYRING].get_verify_key(c.name, c_key_id, int(time.time() * 1000))
    assert bytes(found) == bytes(c_vk)
    # Stored for later: a fresh lookup needs no network at all.
    assert c_key_id in await b.app[KEYRING].store.get_server_keys(c.name, [c_key_id])


async def test_keyring_rejects_a_notary_signed_by_another_key(loopback) -> None:
    a = await loopback("a")
    c = await loopback("c")
    c_key_id, c_vk = _key_of(c)
    await _post(a, {"server_keys": {c.name: {}}})
    await c.stop()
    # B is told the notary signs with C's key: A's real signature must not be accepted.
    wrong = encode_verify_key_base64(c_vk)
    trusted = [{"server_name": a.name, "verify_keys": {"ed25519:zzz": wrong}}]
    b = await loopback("b", trusted_key_servers=trusted)
    from federation.keyring import KeyNotFound

    with pytest.raises(KeyNotFound):
        await b.app[KEYRING].get_verify_key(c.name, c_key_id, int(time.time() * 1000))


async def test_one_notary_query_starts_only_a_few_fetches(app_client) -> None:
    """Issue 8.9: an anonymous POST /_matrix/key/v2/query naming 100 servers makes us
    fetch from at most MAX_FETCHES_PER_QUERY origins; the rest are answered from
    what we hold (here: nothing)."""
    from federation.server.keys import MAX_FETCHES_PER_QUERY

    keyring = app_client.app[KEYRING]
    fetched: list[str] = []

    async def fake_fetch(server_name: str, **kw: Any) -> None:
        fetched.append(server_name)

    keyring._fetch = fake_fetch  # type: ignore[method-assign]
    body = {"server_keys": {f"s{i}.example": {} for i in range(100)}}
    resp = await app_client.post("/_matrix/key/v2/query", json=body)
    assert resp.status == 200
    assert await resp.json() == {"server_keys": []}
    assert len(fetched) == MAX_FETCHES_PER_QUERY
