"""What registration asks of a human (homeserver/accounts/registration_stages.py):
a solved reCAPTCHA (m.login.recaptcha, checked with the captcha service; here a fake
siteverify service on loopback) and accepting the server's policy (m.login.terms,
the page served at /_matrix/consent, the version recorded for the admin API).

What Element shows: the captcha with the site key from `params`, the policy's name and
link with a checkbox. What must not work: a wrong or missing captcha answer, skipping
a stage (the dummy stage is not offered), an unknown policy version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from homeserver.app import create_app
from homeserver.config import Config
from tests.admin.conftest import make_env

V3 = "/_matrix/client/v3"
BASE = "http://localhost:8008/"


async def fake_siteverify(asked: list[dict[str, str]]) -> TestServer:
    """reCAPTCHA's siteverify: the answer "solved" passes."""

    async def verify(request: web.Request) -> web.Response:
        form = dict(await request.post())
        asked.append({k: str(v) for k, v in form.items()})
        return web.json_response({"success": form.get("response") == "solved"})

    app = web.Application()
    app.router.add_post("/siteverify", verify)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def captcha_settings(url: str) -> dict[str, Any]:
    return {
        "enable_registration_without_verification": False,
        "enable_registration_captcha": True,
        "recaptcha_public_key": "site-key",
        "recaptcha_private_key": "secret-key",
        "recaptcha_siteverify_api": url,
    }


def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "privacy" / "en").mkdir(parents=True)
    (tmp_path / "privacy" / "en" / "1.0.html").write_text("<h1>Our policy</h1>")
    return tmp_path / "privacy"


async def start(client: Any, username: str) -> dict[str, Any]:
    resp = await client.post(f"{V3}/register", json={"username": username, "password": "pw pw pw"})
    assert resp.status == 401, await resp.text()
    return await resp.json()


async def step(client: Any, username: str, session: str, **auth: Any) -> Any:
    body = {"username": username, "password": "pw pw pw", "auth": {**auth, "session": session}}
    return await client.post(f"{V3}/register", json=body)


async def test_registration_with_a_captcha(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    asked: list[dict[str, str]] = []
    service = await fake_siteverify(asked)
    try:
        url = str(service.make_url("/siteverify"))
        client = await aiohttp_client(create_app(tmp_config(**captcha_settings(url))))
        challenge = await start(client, "carol")
        assert challenge["flows"] == [{"stages": ["m.login.recaptcha"]}]
        assert challenge["params"] == {"m.login.recaptcha": {"public_key": "site-key"}}
        session = challenge["session"]
        # The dummy stage is not offered: no way around the captcha.
        resp = await step(client, "carol", session, type="m.login.dummy")
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_UNRECOGNIZED")
        resp = await step(client, "carol", session, type="m.login.recaptcha")
        assert (resp.status, (await resp.json())["errcode"]) == (401, "M_CAPTCHA_NEEDED")
        resp = await step(client, "carol", session, type="m.login.recaptcha", response="guess")
        assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNAUTHORIZED")
        resp = await step(client, "carol", session, type="m.login.recaptcha", response="solved")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["user_id"] == "@carol:test.local"
        assert asked == [
            {"secret": "secret-key", "response": "guess"},
            {"secret": "secret-key", "response": "solved"},
        ]
        # The captcha service down: the attempt fails cleanly, and can be retried.
        await service.close()
        challenge = await start(client, "dave")
        resp = await step(
            client, "dave", challenge["session"], type="m.login.recaptcha", response="solved"
        )
        assert (resp.status, (await resp.json())["errcode"]) == (502, "M_UNKNOWN")
    finally:
        await service.close()


async def test_registration_accepting_the_policy(
    aiohttp_client: Any, tmp_config: Callable[..., Config], tmp_path: Path
) -> None:
    consent = {
        "template_dir": str(policy_dir(tmp_path)),
        "version": "1.0",
        "require_at_registration": True,
    }
    client = await aiohttp_client(create_app(tmp_config(public_baseurl=BASE, user_consent=consent)))
    env = await make_env(client)
    challenge = await start(client, "erin")
    assert challenge["flows"] == [{"stages": ["m.login.terms"]}]
    policy = challenge["params"]["m.login.terms"]["policies"]["privacy_policy"]
    assert policy == {
        "version": "1.0",
        "en": {"name": "Privacy Policy", "url": f"{BASE}_matrix/consent?v=1.0"},
    }
    page = await client.get("/_matrix/consent?v=1.0")
    assert page.status == 200 and await page.text() == "<h1>Our policy</h1>"
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'none'" in page.headers["Content-Security-Policy"]
    unknown = await client.get("/_matrix/consent?v=2.0")
    assert (unknown.status, (await unknown.json())["errcode"]) == (404, "M_NOT_FOUND")

    resp = await step(client, "erin", challenge["session"], type="m.login.terms")
    assert resp.status == 200, await resp.text()
    erin = (await resp.json())["user_id"]
    status, details = await env.call("GET", f"/v2/users/{erin}")
    assert status == 200
    assert details["consent_version"] == "1.0" and isinstance(details["consent_ts"], int)
    # Users who registered otherwise (the admin's) have accepted nothing.
    status, details = await env.call("GET", f"/v2/users/{env.user_id}")
    assert (details["consent_version"], details["consent_ts"]) == (None, None)


async def test_every_stage_together(
    aiohttp_client: Any, tmp_config: Callable[..., Config], tmp_path: Path
) -> None:
    """A token, a captcha, optionally an address, and the policy: Synapse's order."""
    settings = {
        **captcha_settings("http://127.0.0.1:9/siteverify"),
        "registration_requires_token": True,
        "public_baseurl": BASE,
        "email": {"smtp_host": "127.0.0.1", "notif_from": "M <n@test.local>"},
        "user_consent": {
            "template_dir": str(policy_dir(tmp_path)),
            "version": "1.0",
            "require_at_registration": True,
        },
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    challenge = await start(client, "frank")
    assert challenge["flows"] == [
        {"stages": ["m.login.registration_token", "m.login.recaptcha", "m.login.terms"]},
        {
            "stages": [
                "m.login.registration_token",
                "m.login.recaptcha",
                "m.login.email.identity",
                "m.login.terms",
            ]
        },
    ]
    assert set(challenge["params"]) == {"m.login.recaptcha", "m.login.terms"}
