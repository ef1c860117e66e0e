"""Every endpoint of the spec's server-server yaml is routed, or is on the short list of
features not built here, which answer 404 M_UNRECOGNIZED; plus the endpoints that have
no other test home (timestamp_to_event, unknown query types)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from homeserver.appstate import LOCAL_EVENTS, STORES
from tests.federation.inbound_helpers import (
    ALICE,
    create_room,
    fed,
    join_remote,
    seed_remote_key,
)

SPEC = Path("/work/shared/spec/data/api/server-server")

# (method, path) of spec endpoints deliberately not built; each answers M_UNRECOGNIZED.
NOT_BUILT = {
    ("POST", "/_matrix/policy/v1/sign"),  # room policy servers (MSC4284)
}


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _spec_endpoints() -> set[tuple[str, str]]:
    found = set()
    for f in sorted(SPEC.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        base = doc["servers"][0]["variables"]["basePath"]["default"]
        for path, ops in (doc.get("paths") or {}).items():
            for method in ops:
                if method in ("get", "put", "post", "delete"):
                    found.add((method.upper(), _norm(base + path)))
    return found


def _routes(app) -> set[tuple[str, str]]:
    out = set()

    def walk(a) -> None:
        for resource in a.router.resources():
            info = resource.get_info()
            if "app" in info:
                walk(info["app"])
                continue
            path = info.get("formatter") or info.get("path")
            out.update((route.method, _norm(path)) for route in resource)

    walk(app)
    return out


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


@pytest.mark.skipif(not SPEC.is_dir(), reason="spec checkout not present")
async def test_every_spec_endpoint_is_routed_or_known_missing(client, tmp_config):
    from homeserver.app import create_app

    app = create_app(tmp_config(serve_server_wellknown=True))
    routed = _routes(app)
    spec = _spec_endpoints()
    missing = {e for e in spec if e not in routed}
    assert missing == NOT_BUILT
    assert spec >= NOT_BUILT  # the list names real spec endpoints
    for method, path in sorted(NOT_BUILT):
        status, body = await fed(
            client, method, path.replace("{}", "x"), {} if method != "GET" else None
        )
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED"), (method, path)


async def test_unknown_query_type_is_unrecognized(client):
    status, body = await fed(client, "GET", "/_matrix/federation/v1/query/m.nothing?x=1")
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


async def test_timestamp_to_event(client):
    room_id = await create_room(client)
    await join_remote(client, room_id)
    sent = [
        await client.app[LOCAL_EVENTS].send(room_id, ALICE, "m.room.message", {"body": str(i)})
        for i in range(3)
    ]
    stores = client.app[STORES]
    events = [await stores.events.get_event(e.event_id) for e in sent]
    middle = events[1]
    path = f"/_matrix/federation/v1/timestamp_to_event/{room_id}"
    status, body = await fed(client, "GET", f"{path}?ts={middle.origin_server_ts}&dir=b")
    assert status == 200
    assert body["origin_server_ts"] == middle.origin_server_ts
    found = await stores.events.get_event(body["event_id"])
    assert found.origin_server_ts == middle.origin_server_ts and found.room_id == room_id
    last_ts = events[-1].origin_server_ts
    status, body = await fed(client, "GET", f"{path}?ts={last_ts + 10_000}&dir=f")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await fed(client, "GET", f"{path}?ts={last_ts + 10_000}&dir=b")
    assert (status, body["event_id"]) == (200, events[-1].event_id)
    for query in ("ts=1", "dir=f", "ts=x&dir=f", "ts=1&dir=up"):
        status, body = await fed(client, "GET", f"{path}?{query}")
        assert status == 400 and body["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM")
    # A server with no user in the room may not ask.
    other = await create_room(client)
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/timestamp_to_event/{other}?ts=1&dir=f"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
