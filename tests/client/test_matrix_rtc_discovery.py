"""Where Element Call finds the call backend (a LiveKit SFU's token service): the extra
keys of /.well-known/matrix/client (Synapse's extra_well_known_client_content) and MSC4143's
/rtc/transports (Synapse's matrix_rtc.transports), for users only; both checked as JSON
when the config loads."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.config import ConfigError
from tests.client.helpers import auth, make_user

LIVEKIT = {"type": "livekit", "livekit_service_url": "https://lk-jwt.test.local"}
TRANSPORTS = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"


async def test_extra_client_well_known_keys_never_replace_ours(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    extra = {
        "org.matrix.msc4143.rtc_foci": [LIVEKIT],
        "m.homeserver": {"base_url": "https://evil.example"},
        "io.element.e2ee": {"default": False},
    }
    config = tmp_config(public_baseurl="https://test.local/", extra_well_known_client_content=extra)
    client = await aiohttp_client(create_app(config))
    response = await client.get("/.well-known/matrix/client")
    assert response.status == 200
    assert await response.json() == {
        "m.homeserver": {"base_url": "https://test.local/"},
        "org.matrix.msc4143.rtc_foci": [LIVEKIT],
        "io.element.e2ee": {"default": False},
    }


async def test_rtc_transports_for_users_when_configured(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    config = tmp_config(matrix_rtc={"transports": [LIVEKIT]})
    client = await aiohttp_client(create_app(config))
    _, token, _ = await make_user(client, "alice")
    response = await client.get(TRANSPORTS, headers=auth(token))
    assert response.status == 200
    assert await response.json() == {"rtc_transports": [LIVEKIT]}
    anonymous = await client.get(TRANSPORTS)
    assert anonymous.status == 401
    assert (await anonymous.json())["errcode"] == "M_MISSING_TOKEN"

    plain = await aiohttp_client(create_app(tmp_config()))
    _, token, _ = await make_user(plain, "bob")
    response = await plain.get(TRANSPORTS, headers=auth(token))
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_UNRECOGNIZED"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"extra_well_known_client_content": ["x"]}, "extra_well_known_client_content"),
        (
            {"extra_well_known_client_content": {"when": datetime.date(2026, 1, 1)}},
            "JSON values only",
        ),
        ({"matrix_rtc": {"transports": [{"livekit_service_url": "x"}]}}, "string 'type'"),
        ({"matrix_rtc": {"transport": []}}, "matrix_rtc"),
    ],
)
def test_bad_settings_are_reported(tmp_config: Any, settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        tmp_config(**settings)
    assert problem in str(caught.value)
