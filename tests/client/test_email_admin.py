"""Email addresses through Synapse's admin API (homeserver/admin/users.py): a user's
addresses in their details, set by PUT /v2/users/<id> (`threepids`), and who holds an
address (/v1/threepid/<medium>/users/<address>)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.admin.conftest import make_env
from tests.client.helpers import register_user
from tests.client.test_email_threepids import V3, add_email, email_settings, listed
from tests.mail_sink import MailSink


async def test_the_admin_api_shows_a_users_addresses(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**email_settings(sink))))
    env = await make_env(client)
    alice = await register_user(client, "alice")
    await add_email(client, sink, alice, "alice@example.org")
    status, body = await env.call("GET", f"/v2/users/{alice['user_id']}")
    assert status == 200
    [entry] = body["threepids"]
    assert entry == (await listed(client, alice["access_token"]))[0]
    assert entry["address"] == "alice@example.org"


async def test_an_admin_sets_and_looks_up_addresses(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    """Synapse's admin API: PUT /v2/users/<id> with `threepids` replaces the user's
    addresses (creating a user with one too), and /v1/threepid/email/users/<address>
    finds the holder. One address, one user: refused before anything changes."""
    client = await aiohttp_client(create_app(tmp_config(**email_settings(sink))))
    env = await make_env(client)
    carol = "@carol:test.local"
    status, body = await env.call(
        "PUT",
        f"/v2/users/{carol}",
        json={"password": "pw pw pw", "threepids": [{"medium": "email", "address": "C@x.org"}]},
    )
    assert status == 201, body
    assert [t["address"] for t in body["threepids"]] == ["c@x.org"]
    status, body = await env.call("GET", "/v1/threepid/email/users/C@X.org")
    assert (status, body) == (200, {"user_id": carol})
    # carol can sign in with it, and reset her password by it.
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "c@x.org"},
        "password": "pw pw pw",
    }
    assert (await client.post(f"{V3}/login", json=login)).status == 200
    # Replacing: the old one is gone, the new one listed.
    status, body = await env.call(
        "PUT",
        f"/v2/users/{carol}",
        json={"threepids": [{"medium": "email", "address": "c2@x.org"}]},
    )
    assert status == 200
    assert [t["address"] for t in body["threepids"]] == ["c2@x.org"]
    status, _ = await env.call("GET", "/v1/threepid/email/users/c@x.org")
    assert status == 404
    # Another user's address, a phone number, junk: refused, nothing changed.
    for threepids, errcode in (
        ([{"medium": "email", "address": "c2@x.org"}], "M_THREEPID_IN_USE"),
        ([{"medium": "msisdn", "address": "447700900000"}], "M_INVALID_PARAM"),
        ([{"medium": "email"}], "M_MISSING_PARAM"),
    ):
        status, body = await env.call(
            "PUT", f"/v2/users/{env.user_id}", json={"displayname": "B", "threepids": threepids}
        )
        assert (status, body["errcode"]) == (400, errcode), body
    status, body = await env.call("GET", f"/v2/users/{env.user_id}")
    assert body["threepids"] == [] and body["displayname"] != "B"
    status, _ = await env.call("GET", "/v1/threepid/email/users/c2@x.org", token="user")
    assert status == 403
