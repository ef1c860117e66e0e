"""The assembled app in-process: versions, error shapes, CORS, well-known, listeners."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from homeserver.app import AREAS, CLIENT, create_app
from homeserver.appstate import CONFIG, LISTENERS, STORES, Mounts
from homeserver.client.versions import SUPPORTED_VERSIONS, UNSTABLE_FEATURES
from homeserver.config import ListenerConfig
from homeserver.http import client_ip
from tests import deployment_mode

VERSIONS = list(SUPPORTED_VERSIONS)


async def test_versions(app_client: Any) -> None:
    response = await app_client.get("/_matrix/client/versions")
    assert response.status == 200
    # Exactly, as Synapse: some clients compare the header literally.
    assert response.headers["Content-Type"] == "application/json"
    assert await response.json() == {"versions": VERSIONS, "unstable_features": UNSTABLE_FEATURES}
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_unknown_endpoints_are_m_unrecognized(app_client: Any) -> None:
    for path in ("/_matrix/client/v3/nonsense", "/nowhere", "/_matrix/federation/v1/nope"):
        response = await app_client.get(path)
        assert response.status == 404, path
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {
            "errcode": "M_UNRECOGNIZED",
            "error": "Unrecognized request",
        }
        assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_wrong_method_is_405(app_client: Any) -> None:
    response = await app_client.post("/_matrix/client/versions", json={})
    assert response.status == 405
    body = await response.json()
    assert body["errcode"] == "M_UNRECOGNIZED"
    assert "GET" in response.headers["Allow"]


async def test_cors_preflight_on_any_path(app_client: Any) -> None:
    for path in ("/_matrix/client/v3/login", "/_matrix/client/versions", "/anything/at/all"):
        response = await app_client.options(
            path,
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.status == 204, path
        headers = response.headers
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "PUT" in headers["Access-Control-Allow-Methods"]
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert "Content-Type" in headers["Access-Control-Allow-Headers"]


async def test_shared_state_is_set_up(app_client: Any) -> None:
    app = app_client.server.app
    assert app[CONFIG].server_name == "test.local"
    assert await app[STORES].db.fetchval("SELECT 1") == 1


async def test_an_area_plugs_in_with_one_setup_function(aiohttp_client: Any, tmp_config) -> None:

    async def crash(request: web.Request) -> web.Response:
        raise KeyError("internal detail")

    def setup(mounts: Mounts) -> None:
        mounts.client.router.add_get("/v3/crash", crash)

    client = await aiohttp_client(create_app(tmp_config(), areas=(*AREAS, (CLIENT, setup))))
    response = await client.get("/_matrix/client/v3/crash")
    assert response.status == 500
    assert await response.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_well_known_only_when_configured(aiohttp_client: Any, tmp_config) -> None:
    plain = await aiohttp_client(create_app(tmp_config()))
    for path in ("/.well-known/matrix/client", "/.well-known/matrix/server"):
        assert (await plain.get(path)).status == 404

    config = tmp_config(public_baseurl="https://matrix.test.local", serve_server_wellknown=True)
    client = await aiohttp_client(create_app(config))
    response = await client.get("/.well-known/matrix/client")
    assert await response.json() == {"m.homeserver": {"base_url": "https://matrix.test.local/"}}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await client.get("/.well-known/matrix/server")
    assert await response.json() == {"m.server": "test.local:443"}


async def test_well_known_names_the_default_identity_server(
    aiohttp_client: Any, tmp_config
) -> None:
    """default_identity_server (Synapse's): m.identity_server in the client document."""
    config = tmp_config(
        public_baseurl="https://matrix.test.local", default_identity_server="https://id.test"
    )
    client = await aiohttp_client(create_app(config))
    response = await client.get("/.well-known/matrix/client")
    assert await response.json() == {
        "m.homeserver": {"base_url": "https://matrix.test.local/"},
        "m.identity_server": {"base_url": "https://id.test"},
    }


async def test_listener_serves_only_its_resources(aiohttp_client: Any, tmp_config) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    listeners = client.server.app[LISTENERS]
    port = client.server.port
    listeners[port] = ListenerConfig(port=port, resources=frozenset({"federation"}))
    assert (await client.get("/_matrix/client/versions")).status == 404
    assert (await client.get("/_matrix/key/v2/server")).status == 200
    listeners[port] = ListenerConfig(port=port, resources=frozenset({"client"}))
    assert (await client.get("/_matrix/client/versions")).status == 200
    response = await client.get("/_matrix/key/v2/server")
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_UNRECOGNIZED"


async def test_client_ip_trusts_x_forwarded_for_only_on_x_forwarded_listeners(
    aiohttp_client: Any, tmp_config
) -> None:
    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"ip": client_ip(request)})

    def setup(mounts: Mounts) -> None:
        mounts.client.router.add_get("/v3/test_ip", whoami)

    client = await aiohttp_client(create_app(tmp_config(), areas=(*AREAS, (CLIENT, setup))))
    port = client.server.port
    headers = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}
    for x_forwarded, expected in ((False, "127.0.0.1"), (True, "203.0.113.7")):
        client.server.app[LISTENERS][port] = ListenerConfig(
            port=port, x_forwarded=x_forwarded, resources=frozenset({"client"})
        )
        response = await client.get("/_matrix/client/v3/test_ip", headers=headers)
        assert (await response.json())["ip"] == expected


async def test_shutdown_stops_every_task_and_closes_the_database(
    aiohttp_client, tmp_config
) -> None:
    """The composition module owns every lifetime: once the app is cleaned up nothing
    of ours still runs (timers, writers, senders, background work) and the database is
    closed."""
    from homeserver.storage.errors import StorageError

    before = asyncio.all_tasks()
    client = await aiohttp_client(create_app(tmp_config()))
    if deployment_mode.MODE:
        pytest.skip("counts the tasks of the test's own process, where no server runs here")
    stores = client.server.app[STORES]
    assert await stores.db.fetchval("SELECT 1") == 1
    started = asyncio.all_tasks() - before
    assert started  # presence timers, write-behind writers...
    await client.close()
    assert all(t.done() for t in started)
    with pytest.raises(StorageError, match="closed"):
        await stores.db.fetchval("SELECT 1")
