"""X-Matrix authentication of inbound requests, the version endpoint and server ACLs."""

from __future__ import annotations

import pytest

from federation.acl import server_allowed
from homeserver.appstate import LOCAL_EVENTS
from homeserver.events.signing import generate_signing_key
from tests.federation.inbound_helpers import ALICE, create_room, fed, join_remote, seed_remote_key


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


async def test_unsigned_request_is_401(client):
    status, body = await fed(
        client, "GET", "/_matrix/federation/v1/query/profile?user_id=@a:test.local", sign=False
    )
    assert status == 401
    assert body["errcode"] == "M_UNAUTHORIZED"


async def test_wrong_destination_is_401(client):
    status, body = await fed(
        client,
        "GET",
        "/_matrix/federation/v1/query/directory?room_alias=%23a:test.local",
        destination="other.test",
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_signature_must_cover_raw_path(client):
    # Signed for one query string, sent with another.
    from federation.auth import sign_request
    from tests.federation.inbound_helpers import REMOTE_KEY

    auth = sign_request(
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=%40a%3Atest.local",
        "remote.test",
        "test.local",
        None,
        REMOTE_KEY,
    )
    resp = await client.get(
        "/_matrix/federation/v1/query/profile?user_id=@a:test.local",
        headers={"Authorization": auth},
    )
    assert resp.status == 401


async def test_forged_request_signature_is_401(client):
    status, body = await fed(
        client,
        "GET",
        "/_matrix/federation/v1/query/directory?room_alias=%23a:test.local",
        key=generate_signing_key("r1"),
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_signed_request_is_accepted_and_version_is_open(client):
    status, body = await fed(
        client, "GET", "/_matrix/federation/v1/query/directory?room_alias=%23nope:test.local"
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    resp = await client.get("/_matrix/federation/v1/version")
    assert resp.status == 200
    assert (await resp.json())["server"]["name"] == "homeserver-py"


@pytest.mark.parametrize(
    ("acl", "server", "allowed"),
    [
        (None, "evil.test", True),
        ({"allow": ["*"], "deny": ["*.evil.test"]}, "a.EVIL.test", False),
        ({"allow": ["*"], "deny": ["*.evil.test"]}, "good.test", True),
        ({"allow": ["good.test"]}, "good.test:8448", True),
        ({"allow": ["good.test"]}, "other.test", False),
        ({"deny": []}, "good.test", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4:80", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "[::1]:80", False),
        ({"allow": ["*"]}, "[::1]", True),
        ({"allow": ["goo?.test"]}, "good.test", True),
        ({"allow": ["goo?.test"]}, "goooood.test", False),
    ],
)
def test_acl_globs(acl, server, allowed):
    assert server_allowed(acl, server) is allowed


async def test_acl_denied_server_gets_403(client):
    room_id = await create_room(client)
    await join_remote(client, room_id)
    await client.app[LOCAL_EVENTS].send(
        room_id, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": ["remote.test"]}, ""
    )
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/state_ids/{room_id}?event_id=x"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/@bob:remote.test?ver=12"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


@pytest.mark.parametrize("origin", ["remote.test:abc", "remote.test:99999999", "bad name"])
async def test_malformed_origin_is_400(client, origin):
    """As Synapse: an X-Matrix header whose origin is not a server name (a port that is
    not a number) is a malformed request, 400 M_UNAUTHORIZED, not a bad signature."""
    status, body = await fed(
        client,
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=%40a%3Atest.local",
        origin=origin,
    )
    assert (status, body["errcode"]) == (400, "M_UNAUTHORIZED"), body
