"""A pusher cannot point the server at its own network (issue: SSRF through
/pushers/set): gateways on blocked ranges are refused with 400 M_INVALID_PARAM, by
literal address or by a name that resolves there; nothing is stored."""

from __future__ import annotations

import pytest

from tests.client.helpers import auth, make_user


def _pusher(url: str) -> dict:
    return {
        "kind": "http",
        "app_id": "com.example.app",
        "pushkey": "key1",
        "app_display_name": "App",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": url},
    }


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",  # cloud metadata service
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "localhost",  # a name resolving to loopback
    ],
)
async def test_gateway_on_blocked_address_is_refused(app_client, host: str) -> None:
    _, token, _ = await make_user(app_client, "alice")
    url = f"http://{host}:8080/_matrix/push/v1/notify"
    resp = await app_client.post(
        "/_matrix/client/v3/pushers/set", json=_pusher(url), headers=auth(token)
    )
    body = await resp.json()
    assert (resp.status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    listed = await (await app_client.get("/_matrix/client/v3/pushers", headers=auth(token))).json()
    assert listed == {"pushers": []}


async def test_public_gateway_is_stored(app_client) -> None:
    _, token, _ = await make_user(app_client, "alice")
    url = "https://93.184.216.34/_matrix/push/v1/notify"
    resp = await app_client.post(
        "/_matrix/client/v3/pushers/set", json=_pusher(url), headers=auth(token)
    )
    assert resp.status == 200, await resp.text()
    listed = await (await app_client.get("/_matrix/client/v3/pushers", headers=auth(token))).json()
    assert [p["data"]["url"] for p in listed["pushers"]] == [url]
