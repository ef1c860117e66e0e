"""Email addresses (homeserver/client/threepids.py), with a real SMTP server on loopback.

What a user of Element sees: Settings > Email addresses sends a mail, the link in it
confirms, and the address is listed; "Forgot password?" mails a link, and after
confirming the new password works and the old sessions end; signing in with the
address works; registering with an address leaves the account holding it. What must not
work: a mail scanner fetching the link validating anything, a session validated for
one purpose used for another, a session used twice, one address held by two accounts,
sending the browser to a javascript: URL. Both backends where storage matters.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_account import _password_auth
from tests.mail_sink import MailSink, ReceivedMail

V3 = "/_matrix/client/v3"
BASE = "http://localhost:8008/"


def email_settings(sink: MailSink, **extra: Any) -> dict[str, Any]:
    return {"public_baseurl": BASE, "email": sink.email_config(), **extra}


async def request_token(
    client: Any,
    path: str,
    email: str,
    secret: str,
    attempt: int = 1,
    token: str | None = None,
    **extra: Any,
) -> Any:
    body = {"email": email, "client_secret": secret, "send_attempt": attempt, **extra}
    headers = auth(token) if token else {}
    return await client.post(f"{V3}{path}/email/requestToken", json=body, headers=headers)


async def mailed_link(
    client: Any, sink: MailSink, path: str, email: str, secret: str, token: str | None = None
) -> tuple[str, ReceivedMail]:
    """requestToken, and the sid and the mail it sent."""
    seen = len(sink.received)
    resp = await request_token(client, path, email, secret, token=token)
    assert resp.status == 200, await resp.text()
    sid = (await resp.json())["sid"]
    mail = await sink.mail_after(seen)
    return sid, mail


async def confirm(client: Any, mail: ReceivedMail) -> Any:
    """Open the link and press the page's button (a browser's form post)."""
    link = mail.link()
    page = await client.get(link, allow_redirects=False)
    assert page.status == 200, await page.text()
    html = await page.text()
    assert '<form method="post">' in html
    query = dict(item.split("=", 1) for item in link.split("?", 1)[1].split("&"))
    from urllib.parse import unquote

    form = {k: unquote(v) for k, v in query.items()}
    return await client.post(link.split("?", 1)[0], data=form, allow_redirects=False)


async def add_email(client: Any, sink: MailSink, user: dict[str, Any], email: str) -> None:
    secret = secrets.token_hex(8)
    sid, mail = await mailed_link(
        client, sink, "/account/3pid", email, secret, user["access_token"]
    )
    assert (await confirm(client, mail)).status == 200
    body = {
        "sid": sid,
        "client_secret": secret,
        "auth": _password_auth(user["user_id"]),
    }
    resp = await client.post(
        f"{V3}/account/3pid/add", json=body, headers=auth(user["access_token"])
    )
    assert resp.status == 200, await resp.text()


async def listed(client: Any, token: str) -> list[dict[str, Any]]:
    resp = await client.get(f"{V3}/account/3pid", headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["threepids"]


async def test_adding_an_email_address(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    sink: MailSink,
) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(**database_settings, **email_settings(sink)))
    )
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    caps = await (await client.get(f"{V3}/capabilities", headers=auth(token))).json()
    assert caps["capabilities"]["m.3pid_changes"] == {"enabled": True}

    secret = "s3cret.Secret_=-"
    sid, mail = await mailed_link(
        client, sink, "/account/3pid", " Alice@Example.ORG ", secret, token
    )
    assert mail.envelope_to == ["alice@example.org"]
    assert mail.subject == "[test.local] Validate your email"
    assert str(mail.message["From"]) == "Test Server <noreply@test.local>"
    assert mail.link().startswith("/_matrix/client/unstable/add_threepid/email/submit_token?")
    assert BASE + "_matrix/client/unstable/add_threepid/email/submit_token?" in mail.text
    assert mail.link().split("?")[0] in mail.html

    body: dict[str, Any] = {
        "sid": sid,
        "client_secret": secret,
        "auth": _password_auth(alice["user_id"]),
    }
    # Opening the link (what a mail scanner does) validates nothing.
    page = await client.get(mail.link())
    assert page.status == 200
    assert "alice@example.org" in await page.text()
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    resp = await client.post(f"{V3}/account/3pid/add", json=body, headers=auth(token))
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"
    assert await listed(client, token) == []

    done = await confirm(client, mail)
    assert done.status == 200
    assert "confirmed" in await done.text()
    # The add needs the user's password too (UIA), then the address is theirs.
    no_auth = {k: v for k, v in body.items() if k != "auth"}
    challenge = await client.post(f"{V3}/account/3pid/add", json=no_auth, headers=auth(token))
    assert challenge.status == 401
    assert (await challenge.json())["flows"] == [{"stages": ["m.login.password"]}]
    resp = await client.post(f"{V3}/account/3pid/add", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    [entry] = await listed(client, token)
    assert entry["medium"] == "email" and entry["address"] == "alice@example.org"
    assert entry["validated_at"] <= entry["added_at"]

    # A session is used once.
    again = await client.post(f"{V3}/account/3pid/add", json=body, headers=auth(token))
    assert (again.status, (await again.json())["errcode"]) == (400, "M_THREEPID_AUTH_FAILED")
    # The address is alice's: nobody else may ask to add it or register with it.
    bob = await register_user(client, "bob")
    for path, tok in (("/account/3pid", bob["access_token"]), ("/register", None)):
        resp = await request_token(client, path, "ALICE@example.org", "other", token=tok)
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_THREEPID_IN_USE")

    # Deleting it frees it.
    resp = await client.post(
        f"{V3}/account/3pid/delete",
        json={"medium": "email", "address": "alice@EXAMPLE.org"},
        headers=auth(token),
    )
    assert resp.status == 200
    assert (await resp.json()) == {"id_server_unbind_result": "no-support"}
    assert await listed(client, token) == []
    resp = await request_token(
        client, "/account/3pid", "alice@example.org", "b", token=bob["access_token"]
    )
    assert resp.status == 200


async def test_forgotten_password_reset_by_email(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    sink: MailSink,
) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(**database_settings, **email_settings(sink)))
    )
    alice = await register_user(client, "alice")
    await add_email(client, sink, alice, "alice@example.org")

    unknown = await request_token(client, "/account/password", "nobody@example.org", "x")
    assert (unknown.status, (await unknown.json())["errcode"]) == (400, "M_THREEPID_NOT_FOUND")

    secret = secrets.token_hex(8)
    sid, mail = await mailed_link(client, sink, "/account/password", "Alice@example.org", secret)
    assert mail.subject == "[test.local] Password reset"
    assert "/unstable/password_reset/email/submit_token?" in mail.link()
    creds = {
        "type": "m.login.email.identity",
        "threepid_creds": {"sid": sid, "client_secret": secret},
    }
    body: dict[str, Any] = {"new_password": "new horse"}
    challenge = await client.post(f"{V3}/account/password", json=body)
    assert challenge.status == 401
    first = await challenge.json()
    assert first["flows"] == [{"stages": ["m.login.email.identity"]}]
    body["auth"] = {**creds, "session": first["session"]}
    early = await client.post(f"{V3}/account/password", json=body)
    assert early.status == 401
    assert (await early.json())["errcode"] == "M_UNAUTHORIZED"

    assert (await confirm(client, mail)).status == 200
    resp = await client.post(f"{V3}/account/password", json=body)
    assert resp.status == 200, await resp.text()
    # Every session ended (logout_devices defaults to true); the new password works.
    whoami = await client.get(f"{V3}/account/whoami", headers=auth(alice["access_token"]))
    assert whoami.status == 401
    old = await client.post(f"{V3}/login", json=_password_auth("alice"))
    assert old.status == 403
    new = await client.post(f"{V3}/login", json=_password_auth("alice", "new horse"))
    assert new.status == 200
    # The session cannot reset it again.
    replay = await client.post(
        f"{V3}/account/password", json={"new_password": "third", "auth": creds}
    )
    assert replay.status == 401
    assert (await replay.json())["errcode"] == "M_UNAUTHORIZED"


async def test_signing_in_with_an_email_address(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**email_settings(sink))))
    alice = await register_user(client, "alice")
    await add_email(client, sink, alice, "alice@example.org")
    by_identifier = {
        "type": "m.login.password",
        "identifier": {
            "type": "m.id.thirdparty",
            "medium": "email",
            "address": "ALICE@example.org",
        },
        "password": "correct horse",
    }
    resp = await client.post(f"{V3}/login", json=by_identifier)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["user_id"] == alice["user_id"]
    legacy = {
        "type": "m.login.password",
        "medium": "email",
        "address": "alice@example.org",
        "password": "correct horse",
    }
    resp = await client.post(f"{V3}/login", json=legacy)
    assert (await resp.json())["user_id"] == alice["user_id"]
    # Wrong password and unknown address answer alike.
    wrong = {**by_identifier, "password": "wrong"}
    unknown = {**by_identifier, "identifier": {**by_identifier["identifier"], "address": "x@y.org"}}
    for body in (wrong, unknown):
        resp = await client.post(f"{V3}/login", json=body)
        assert resp.status == 403
        assert await resp.json() == {
            "errcode": "M_FORBIDDEN",
            "error": "Invalid username or password",
        }


async def test_registering_with_an_email_address(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    sink: MailSink,
) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(**database_settings, **email_settings(sink)))
    )
    first = await client.post(f"{V3}/register", json={"username": "carol", "password": "pw pw pw"})
    assert first.status == 401
    challenge = await first.json()
    assert challenge["flows"] == [
        {"stages": ["m.login.dummy"]},
        {"stages": ["m.login.email.identity"]},
    ]
    secret = secrets.token_hex(8)
    sid, mail = await mailed_link(client, sink, "/register", "carol@example.org", secret)
    assert "/unstable/registration/email/submit_token?" in mail.link()
    creds = {"sid": sid, "client_secret": secret}
    body = {
        "username": "carol",
        "password": "pw pw pw",
        "auth": {
            "type": "m.login.email.identity",
            "threepid_creds": creds,
            "session": challenge["session"],
        },
    }
    early = await client.post(f"{V3}/register", json=body)
    assert early.status == 401
    assert (await early.json())["errcode"] == "M_UNAUTHORIZED"
    assert (await confirm(client, mail)).status == 200
    resp = await client.post(f"{V3}/register", json=body)
    assert resp.status == 200, await resp.text()
    carol = await resp.json()
    [entry] = await listed(client, carol["access_token"])
    assert entry["address"] == "carol@example.org"
    # The session made one account: a second registration with it fails.
    again = await client.post(
        f"{V3}/register",
        json={
            **body,
            "username": "carol2",
            "auth": {"type": "m.login.email.identity", "threepid_creds": creds},
        },
    )
    assert again.status == 401
    assert (await again.json())["errcode"] == "M_UNAUTHORIZED"


async def test_registration_can_require_an_email_address(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    settings = email_settings(
        sink,
        registrations_require_3pid=["email"],
        enable_registration_without_verification=False,
    )
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    first = await client.post(f"{V3}/register", json={"username": "dan", "password": "pw pw pw"})
    assert (await first.json())["flows"] == [{"stages": ["m.login.email.identity"]}]
    dummy = await client.post(
        f"{V3}/register",
        json={"username": "dan", "password": "pw", "auth": {"type": "m.login.dummy"}},
    )
    assert dummy.status == 400
    assert (await dummy.json())["errcode"] == "M_UNRECOGNIZED"


async def test_a_session_is_only_good_for_what_the_mail_said(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    """An attacker who gets a victim to confirm "add this address" cannot use that
    session to reset the victim's password (nor the other way round)."""
    client = await aiohttp_client(create_app(tmp_config(**email_settings(sink))))
    victim = await register_user(client, "victim")
    await add_email(client, sink, victim, "victim@example.org")
    mallory = await register_user(client, "mallory")
    secret = "mallorys-secret"
    # Mallory asks to add some fresh address and confirms it herself...
    sid, mail = await mailed_link(
        client, sink, "/account/3pid", "m@example.org", secret, mallory["access_token"]
    )
    await confirm(client, mail)
    creds = {"sid": sid, "client_secret": secret}
    # ... it is no password reset session (for any address).
    resp = await client.post(
        f"{V3}/account/password",
        json={
            "new_password": "x",
            "auth": {"type": "m.login.email.identity", "threepid_creds": creds},
        },
    )
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
    # A password reset session cannot add the address to her account.
    sid2, mail2 = await mailed_link(client, sink, "/account/password", "victim@example.org", secret)
    await confirm(client, mail2)
    resp = await client.post(
        f"{V3}/account/3pid/add",
        json={"sid": sid2, "client_secret": secret, "auth": _password_auth(mallory["user_id"])},
        headers=auth(mallory["access_token"]),
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_THREEPID_AUTH_FAILED")
    # Nor does knowing the sid without the client secret validate or use anything.
    wrong = mail.link().replace(f"client_secret={secret}", "client_secret=guess")
    page = await client.get(wrong)
    assert page.status == 400
    assert "not valid" in await page.text()


async def test_links_and_parameters_that_are_refused(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(
        create_app(
            tmp_config(**email_settings(sink, next_link_domain_whitelist=["app.example.org"]))
        )
    )
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    cases = [
        ({"next_link": "javascript:alert(1)"}, "M_INVALID_PARAM"),
        ({"next_link": "https://evil.example.com/"}, "M_INVALID_PARAM"),
        ({"next_link": "https://app.example.org/\r\nSet-Cookie: a=b"}, "M_INVALID_PARAM"),
        ({"next_link": "data:text/html,<script>alert(1)</script>"}, "M_INVALID_PARAM"),
        ({"email": "not-an-email"}, "M_INVALID_PARAM"),
        ({"email": "a@b@c"}, "M_INVALID_PARAM"),
        ({"email": "a\n@b.org"}, "M_INVALID_PARAM"),
        ({"email": "victim,attacker@evil.example"}, "M_INVALID_PARAM"),
        ({"email": '"quoted"@b.org'}, "M_INVALID_PARAM"),
        ({"client_secret": "has space"}, "M_INVALID_PARAM"),
        ({"send_attempt": "1"}, "M_BAD_JSON"),
        ({"client_secret": None}, "M_MISSING_PARAM"),
        ({"send_attempt": None}, "M_MISSING_PARAM"),
    ]
    for override, errcode in cases:
        body = {"email": "a@example.org", "client_secret": "ok", "send_attempt": 1, **override}
        body = {k: v for k, v in body.items() if v is not None}
        resp = await client.post(
            f"{V3}/account/3pid/email/requestToken", json=body, headers=auth(token)
        )
        assert resp.status == 400, (override, await resp.text())
        assert (await resp.json())["errcode"] == errcode, override
    assert sink.received == []

    # An allowed next_link: confirming sends the browser there.
    seen = len(sink.received)
    resp = await request_token(
        client,
        "/account/3pid",
        "a@example.org",
        "ok",
        token=token,
        next_link="https://app.example.org/done",
    )
    assert resp.status == 200
    sid = (await resp.json())["sid"]
    done = await confirm(client, await sink.mail_after(seen))
    assert done.status == 302
    assert done.headers["Location"] == f"https://app.example.org/done?sid={sid}"
    # A link of another purpose's page, or a made-up purpose.
    bad = await client.get(
        "/_matrix/client/unstable/registration/email/submit_token?sid=a&client_secret=b&token=c"
    )
    assert bad.status == 400
    nothing = await client.get("/_matrix/client/unstable/other/email/submit_token")
    assert (nothing.status, (await nothing.json())["errcode"]) == (404, "M_UNRECOGNIZED")
    # Phone numbers need SMS: refused.
    resp = await client.post(
        f"{V3}/account/3pid/msisdn/requestToken",
        json={"country": "GB", "phone_number": "1", "client_secret": "a", "send_attempt": 1},
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_THREEPID_DENIED")


async def test_a_retried_request_mails_once_per_attempt(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**email_settings(sink))))
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    sids = []
    for attempt in (1, 1, 2, 1):
        resp = await request_token(client, "/account/3pid", "a@example.org", "sec", attempt, token)
        assert resp.status == 200
        sids.append((await resp.json())["sid"])
    assert len(set(sids)) == 1
    assert len(sink.received) == 2  # attempts 1 and 2
    # Another secret is another session.
    resp = await request_token(client, "/account/3pid", "a@example.org", "sec2", 1, token)
    assert (await resp.json())["sid"] != sids[0]
    # Six identical requests at once (a client retrying impatiently): one session, one mail.
    seen = len(sink.received)
    answers = await asyncio.gather(
        *(
            request_token(client, "/account/3pid", "b@example.org", "sec", 1, token)
            for _ in range(6)
        )
    )
    assert len({(await r.json())["sid"] for r in answers}) == 1
    await asyncio.sleep(0.3)
    assert len(sink.received) == seen + 1


async def test_mail_server_down_or_without_tls(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    """An SMTP failure answers 502 and keeps no session, so the client's retry (even
    with the same send_attempt) mails; STARTTLS demanded of a server without it fails
    rather than sending in the clear."""
    from tests.ports import free_port

    down = {"public_baseurl": BASE, "email": {**sink.email_config(), "smtp_port": free_port()}}
    client = await aiohttp_client(create_app(tmp_config(**down)))
    alice = await register_user(client, "alice")
    resp = await request_token(
        client, "/account/3pid", "a@example.org", "s", 1, alice["access_token"]
    )
    assert resp.status == 502
    assert (await resp.json())["errcode"] == "M_UNKNOWN"
    await client.close()

    strict = {
        "public_baseurl": BASE,
        "email": {**sink.email_config(), "enable_tls": True, "require_transport_security": True},
    }
    client = await aiohttp_client(create_app(tmp_config(**strict)))
    bob = await register_user(client, "bob")
    resp = await request_token(
        client, "/account/3pid", "b@example.org", "s", 1, bob["access_token"]
    )
    assert resp.status == 502
    assert sink.received == []


async def test_without_an_email_section_nothing_is_mailed(app_client: Any) -> None:
    alice = await register_user(app_client, "alice")
    token = alice["access_token"]
    for path in ("/account/3pid", "/register", "/account/password"):
        resp = await request_token(app_client, path, "a@example.org", "s", token=token)
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_THREEPID_DENIED")
    caps = await (await app_client.get(f"{V3}/capabilities", headers=auth(token))).json()
    assert caps["capabilities"]["m.3pid_changes"] == {"enabled": False}
    resp = await app_client.post(f"{V3}/account/password", json={"new_password": "x"})
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    first = await app_client.post(f"{V3}/register", json={"username": "z", "password": "p"})
    assert (await first.json())["flows"] == [{"stages": ["m.login.dummy"]}]


async def test_deactivation_frees_the_address(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**email_settings(sink))))
    alice = await register_user(client, "alice")
    await add_email(client, sink, alice, "alice@example.org")
    resp = await client.post(
        f"{V3}/account/deactivate",
        json={"auth": _password_auth(alice["user_id"])},
        headers=auth(alice["access_token"]),
    )
    assert resp.status == 200, await resp.text()
    resp = await request_token(client, "/register", "alice@example.org", "s")
    assert resp.status == 200
    resp = await request_token(client, "/account/password", "alice@example.org", "s")
    assert (await resp.json())["errcode"] == "M_THREEPID_NOT_FOUND"


async def test_two_accounts_racing_for_one_address(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    sink: MailSink,
) -> None:
    """Six users each validate the same address (the mail went to one mailbox), then
    all add it at once: exactly one holds it; and one session used by six concurrent
    requests is used once."""
    client = await aiohttp_client(
        create_app(tmp_config(**database_settings, **email_settings(sink)))
    )
    users, bodies = [], []
    for i in range(6):
        user = await register_user(client, f"u{i}")
        secret = f"secret{i}"
        sid, mail = await mailed_link(
            client, sink, "/account/3pid", "shared@example.org", secret, user["access_token"]
        )
        await confirm(client, mail)
        users.append(user)
        bodies.append(
            {"sid": sid, "client_secret": secret, "auth": _password_auth(user["user_id"])}
        )

    async def add(user: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        resp = await client.post(
            f"{V3}/account/3pid/add", json=body, headers=auth(user["access_token"])
        )
        return resp.status, await resp.json()

    results = await asyncio.gather(*(add(u, b) for u, b in zip(users, bodies, strict=True)))
    assert sorted(status for status, _ in results) == [200] + [400] * 5
    assert all(body["errcode"] == "M_THREEPID_IN_USE" for status, body in results if status == 400)
    holders = [u for u in users if await listed(client, u["access_token"])]
    assert len(holders) == 1

    # One validated registration session, six concurrent registrations: one account.
    secret = "reg-secret"
    sid, mail = await mailed_link(client, sink, "/register", "fresh@example.org", secret)
    await confirm(client, mail)

    async def register(i: int) -> int:
        body = {
            "username": f"racer{i}",
            "password": "pw pw pw",
            "auth": {
                "type": "m.login.email.identity",
                "threepid_creds": {"sid": sid, "client_secret": secret},
            },
        }
        resp = await client.post(f"{V3}/register", json=body)
        return resp.status

    statuses = await asyncio.gather(*(register(i) for i in range(6)))
    assert statuses.count(200) == 1, statuses
