"""Single sign-on with an OpenID Connect provider (homeserver/accounts/sso.py), against
a fake provider on loopback (tests/oidc_provider.py) that signs real RS256 ID tokens.

What a user sees: Element's "Continue with Test IdP" button (GET /login's m.login.sso
entry), the provider's page, our page asking whether to continue to the app (unless
the app is whitelisted), then they are signed in (m.login.token); the first time, an
account is made from what the provider says (username, display name, email). An SSO
user confirms risky actions by signing in again (UIA's m.login.sso fallback).

The attacks: a sign-in finished in another browser than the one that started it, a
replayed callback, ID tokens with a wrong nonce, audience or expiry, signed with
another key, with HS256 keyed by the client secret, or with alg none; a javascript:
redirectUrl; someone else's provider identity completing your UIA session."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user
from tests.oidc_provider import FakeProvider

V3 = "/_matrix/client/v3"
BASE = "http://localhost:8008/"
APP = "https://app.example.org/"


@pytest.fixture
async def idp() -> AsyncIterator[FakeProvider]:
    provider = await FakeProvider().start()
    try:
        yield provider
    finally:
        await provider.close()


def sso_settings(
    idp: FakeProvider, *, sso: dict[str, Any] | None = None, **provider: Any
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "public_baseurl": BASE,
        "oidc_providers": [idp.provider_config(**provider)],
    }
    if sso is not None:
        settings["sso"] = sso
    return settings


async def through_provider(client: Any, start_path: str) -> str:
    """Follow the browser to the provider and back: the callback path our server got."""
    resp = await client.get(start_path, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(resp.headers["Location"], allow_redirects=False) as back,
    ):
        assert back.status == 302
        target = urlsplit(back.headers["Location"])
    assert f"{target.scheme}://{target.netloc}/" == BASE
    return f"{target.path}?{target.query}"


async def sign_in(client: Any, redirect: str = APP) -> tuple[Any, str]:
    """The whole sign-in: (the callback's response, its page text)."""
    callback = await through_provider(
        client, f"{V3}/login/sso/redirect/oidc-test?redirectUrl={redirect}"
    )
    resp = await client.get(callback, allow_redirects=False)
    return resp, await resp.text()


def login_token_in(page: str) -> str:
    link = unescape(re.search(r'<a href="([^"]+)">Continue</a>', page).group(1))  # type: ignore[union-attr]
    assert link.startswith(APP)
    return parse_qs(urlsplit(link).query)["loginToken"][0]


async def login_with(client: Any, token: str) -> dict[str, Any]:
    resp = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": token})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_signing_in_makes_an_account_then_finds_it(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    idp: FakeProvider,
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings, **sso_settings(idp))))
    flows = (await (await client.get(f"{V3}/login")).json())["flows"]
    assert {
        "type": "m.login.sso",
        "identity_providers": [{"id": "oidc-test", "name": "Test IdP"}],
    } in flows

    idp.next_claims = {
        "sub": "s-1",
        "preferred_username": "Alice",
        "name": "Alice A.",
        "email": "Alice@Example.org",
    }
    resp, page = await sign_in(client)
    assert resp.status == 200
    assert "app.example.org" in page and "@alice:test.local" in page
    assert resp.headers["X-Frame-Options"] == "DENY"
    # PKCE was used (the provider advertises S256) and our callback URL sent.
    sent = idp.authorize_requests[-1]
    assert (
        sent["code_challenge_method"] == "S256"
        and sent["redirect_uri"] == f"{BASE}_synapse/client/oidc/callback"
    )
    session = await login_with(client, login_token_in(page))
    assert session["user_id"] == "@alice:test.local"
    token = session["access_token"]
    profile = await (await client.get(f"{V3}/profile/@alice:test.local")).json()
    assert profile["displayname"] == "Alice A."
    threepids = await (await client.get(f"{V3}/account/3pid", headers=auth(token))).json()
    assert [t["address"] for t in threepids["threepids"]] == ["alice@example.org"]

    # The same subject again: the same account, whatever the username says now.
    idp.next_claims = {"sub": "s-1", "preferred_username": "renamed"}
    _, page = await sign_in(client)
    assert (await login_with(client, login_token_in(page)))["user_id"] == "@alice:test.local"
    # Another subject wanting the same username gets the next free one.
    idp.next_claims = {"sub": "s-2", "preferred_username": "alice"}
    _, page = await sign_in(client)
    assert (await login_with(client, login_token_in(page)))["user_id"] == "@alice1:test.local"


async def test_whitelisted_clients_get_the_token_at_once(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider
) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(**sso_settings(idp, sso={"client_whitelist": [APP]})))
    )
    resp, _ = await sign_in(client, redirect=f"{APP}?from=sso")
    assert resp.status == 302
    target = urlsplit(resp.headers["Location"])
    query = parse_qs(target.query)
    assert target.netloc == "app.example.org" and query["from"] == ["sso"]
    assert (await login_with(client, query["loginToken"][0]))["user_id"] == "@alice:test.local"


@pytest.mark.parametrize("tamper", ["nonce", "audience", "expired", "other_key", "hs256", "none"])
async def test_id_tokens_that_lie_are_refused(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider, tamper: str
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**sso_settings(idp))))
    idp.tamper = tamper
    resp, page = await sign_in(client)
    assert resp.status == 502, page
    assert "could not be used" in page and "loginToken" not in page
    # Nobody was made.
    resp = await client.get(f"{V3}/register/available?username=alice")
    assert resp.status == 200


async def test_a_sign_in_belongs_to_the_browser_that_started_it(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider
) -> None:
    """An attacker starts a sign-in and sends the victim the provider link: finished in
    the victim's browser (no cookie of ours) it signs nobody in, and does not spoil the
    sign-in for the browser that started it. A callback is used once."""
    settings = tmp_config(**sso_settings(idp))
    attacker = await aiohttp_client(create_app(settings))
    callback = await through_provider(
        attacker, f"{V3}/login/sso/redirect/oidc-test?redirectUrl={APP}"
    )
    victim_browser = attacker.session.cookie_jar
    saved = list(victim_browser)
    victim_browser.clear()
    resp = await attacker.get(callback, allow_redirects=False)
    assert resp.status == 400 and "another browser" in await resp.text()
    for cookie in saved:
        victim_browser.update_cookies({cookie.key: cookie.value}, attacker.make_url(cookie["path"]))
    resp = await attacker.get(callback, allow_redirects=False)
    assert resp.status == 200 and "Continue" in await resp.text()
    # Used once: replaying it fails.
    resp = await attacker.get(callback, allow_redirects=False)
    assert resp.status == 400 and "expired or was used" in await resp.text()


async def test_refused_requests(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider
) -> None:
    client = await aiohttp_client(
        create_app(
            tmp_config(
                **sso_settings(
                    idp,
                    attribute_requirements=[{"attribute": "groups", "value": "staff"}],
                    enable_registration=False,
                )
            )
        )
    )
    for url, status, errcode in (
        (
            f"{V3}/login/sso/redirect/oidc-test?redirectUrl=javascript:alert(1)",
            400,
            "M_INVALID_PARAM",
        ),
        (f"{V3}/login/sso/redirect/oidc-other?redirectUrl={APP}", 404, "M_NOT_FOUND"),
        (f"{V3}/login/sso/redirect/oidc-test", 400, "M_MISSING_PARAM"),
    ):
        resp = await client.get(url, allow_redirects=False)
        assert (resp.status, (await resp.json())["errcode"]) == (status, errcode), url
    idp.next_claims = {"sub": "x", "preferred_username": "x", "groups": ["guests"]}
    resp, page = await sign_in(client)
    assert resp.status == 403 and "may not sign in here" in page
    idp.next_claims = {"sub": "x", "preferred_username": "x", "groups": ["staff"]}
    resp, page = await sign_in(client)
    assert resp.status == 403 and "new ones are not made" in page
    resp = await client.get(
        "/_synapse/client/oidc/callback?error=access_denied&error_description=No"
    )
    assert resp.status == 400 and "No" in await resp.text()


async def test_existing_users_are_linked_when_allowed(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider
) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(**sso_settings(idp, allow_existing_users=True)))
    )
    from tests.admin.conftest import make_env

    env = await make_env(client)
    carol = await register_user(client, "carol")
    dave = await register_user(client, "dave")
    idp.next_claims = {"sub": "carol-sub", "preferred_username": "carol"}
    _, page = await sign_in(client)
    assert (await login_with(client, login_token_in(page)))["user_id"] == carol["user_id"]
    # Each is offered what they have: carol a password or the provider, dave his password.
    for user, flows in (
        (carol, [["m.login.password"], ["m.login.sso"]]),
        (dave, [["m.login.password"]]),
    ):
        resp = await client.post(
            f"{V3}/delete_devices", json={"devices": ["X"]}, headers=auth(user["access_token"])
        )
        assert [f["stages"] for f in (await resp.json())["flows"]] == flows
    # The admin API shows the link and finds the user by it.
    status, body = await env.call("GET", f"/v2/users/{carol['user_id']}")
    assert body["external_ids"] == [{"auth_provider": "oidc-test", "external_id": "carol-sub"}]
    status, body = await env.call("GET", "/v1/auth_providers/oidc-test/users/carol-sub")
    assert (status, body) == (200, {"user_id": carol["user_id"]})
    status, _ = await env.call("GET", "/v1/auth_providers/oidc-test/users/nobody")
    assert status == 404


async def test_an_sso_user_confirms_a_risky_action_by_signing_in_again(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**sso_settings(idp))))
    idp.next_claims = {"sub": "s-1", "preferred_username": "alice"}
    _, page = await sign_in(client)
    first = await login_with(client, login_token_in(page))
    _, page = await sign_in(client)
    second = await login_with(client, login_token_in(page))
    body: dict[str, Any] = {"devices": [second["device_id"]]}
    resp = await client.post(f"{V3}/delete_devices", json=body, headers=auth(first["access_token"]))
    assert resp.status == 401
    challenge = await resp.json()
    assert challenge["flows"] == [{"stages": ["m.login.sso"]}]  # no password to type
    session = challenge["session"]
    page = await client.get(f"{V3}/auth/m.login.sso/fallback/web?session={session}")
    text = await page.text()
    assert page.status == 200 and "wants to remove devices from your account" in text
    assert "idp=oidc-test" in text
    # Someone else's provider identity cannot complete alice's session.
    idp.next_claims = {"sub": "mallory-sub", "preferred_username": "mallory"}
    _, page = await sign_in(client)
    await login_with(client, login_token_in(page))  # mallory exists now
    callback = await through_provider(
        client, f"{V3}/auth/m.login.sso/fallback/web?session={session}&idp=oidc-test"
    )
    await client.get(callback)
    body["auth"] = {"session": session}
    resp = await client.post(f"{V3}/delete_devices", json=body, headers=auth(first["access_token"]))
    assert resp.status == 403, await resp.text()
    # alice herself, in a fresh session, can.
    resp = await client.post(
        f"{V3}/delete_devices",
        json={"devices": body["devices"]},
        headers=auth(first["access_token"]),
    )
    session = (await resp.json())["session"]
    idp.next_claims = {"sub": "s-1", "preferred_username": "alice"}
    callback = await through_provider(
        client, f"{V3}/auth/m.login.sso/fallback/web?session={session}&idp=oidc-test"
    )
    done = await client.get(callback)
    assert done.status == 200 and "confirmed who you are" in await done.text()
    body["auth"] = {"session": session}
    resp = await client.post(f"{V3}/delete_devices", json=body, headers=auth(first["access_token"]))
    assert resp.status == 200, await resp.text()
    whoami = await client.get(f"{V3}/account/whoami", headers=auth(second["access_token"]))
    assert whoami.status == 401


async def test_two_first_sign_ins_at_once_make_one_account(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    idp: FakeProvider,
) -> None:
    """The same person signing in for the first time in two browsers at once."""
    import asyncio

    first = await aiohttp_client(create_app(tmp_config(**database_settings, **sso_settings(idp))))
    browsers = [first] + [await aiohttp_client(first.server) for _ in range(3)]
    idp.next_claims = {"sub": "racer", "preferred_username": "racer"}
    callbacks = [
        await through_provider(b, f"{V3}/login/sso/redirect/oidc-test?redirectUrl={APP}")
        for b in browsers
    ]
    pages = await asyncio.gather(
        *(b.get(c, allow_redirects=False) for b, c in zip(browsers, callbacks, strict=True))
    )
    users = {(await login_with(first, login_token_in(await p.text())))["user_id"] for p in pages}
    assert users == {"@racer:test.local"}
    for taken in ("racer1", "racer2"):
        resp = await first.get(f"{V3}/register/available?username={taken}")
        assert resp.status == 200, taken


async def test_starting_sign_ins_is_bounded_per_address(
    aiohttp_client: Any, tmp_config: Callable[..., Config], idp: FakeProvider
) -> None:
    """Each start is a stored row: 30 at once per address, then one a second (an
    office behind one address still signs in; a flood does not fill the table)."""
    client = await aiohttp_client(create_app(tmp_config(**sso_settings(idp), rc_enabled=True)))
    statuses = []
    for _ in range(31):
        resp = await client.get(
            f"{V3}/login/sso/redirect/oidc-test?redirectUrl={APP}", allow_redirects=False
        )
        statuses.append(resp.status)
    assert statuses == [302] * 30 + [429]
