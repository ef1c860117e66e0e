"""matrix-js-sdk (a real client, from npm) through the email flows Element offers: add an
address (requestAdd3pidEmailToken, the mailed link, addThreePidOnly with the password),
sign in with it, "Forgot password?" (requestPasswordEmailToken, the link, setPassword
with m.login.email.identity), and remove it. A real SMTP server on loopback receives the
mail. Skips without Node or the package, unless JS_CLIENTS=1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import create_app
from tests.client.helpers import register_user
from tests.client.test_email_threepids import confirm, email_settings
from tests.client.test_sliding_sync_jssdk import REQUIRED, _unavailable, run_js
from tests.mail_sink import MailSink


@pytest.fixture
async def mailing(
    aiohttp_client: Any, tmp_config: Any
) -> AsyncIterator[tuple[TestClient, MailSink]]:
    reason = _unavailable()
    if reason:
        if REQUIRED:
            pytest.fail(f"JS_CLIENTS=1 but {reason}")
        pytest.skip(reason)
    sink = MailSink().start()
    try:
        server = TestServer(create_app(tmp_config(**email_settings(sink))), host="127.0.0.1")
        yield await aiohttp_client(server), sink
    finally:
        sink.stop()


async def test_email_address_and_password_reset_through_matrix_js_sdk(
    mailing: tuple[TestClient, MailSink],
) -> None:
    live, sink = mailing
    alice = await register_user(live, "alice")
    nobody = {"user_id": "", "device_id": "", "access_token": ""}

    seen = len(sink.received)
    sent = await run_js(
        live, "email_client.mjs", alice, "request-add", "Alice@Example.org", "secret1"
    )
    assert (await confirm(live, await sink.mail_after(seen))).status == 200
    added = await run_js(
        live, "email_client.mjs", alice, "add", sent["sid"], "secret1", "correct horse"
    )
    assert [(t["medium"], t["address"]) for t in added["threepids"]] == [
        ("email", "alice@example.org")
    ]

    signed_in = await run_js(
        live, "email_client.mjs", nobody, "login", "alice@example.org", "correct horse"
    )
    assert signed_in == {"user_id": alice["user_id"]}

    seen = len(sink.received)
    sent = await run_js(
        live, "email_client.mjs", nobody, "request-reset", "alice@example.org", "secret2"
    )
    assert (await confirm(live, await sink.mail_after(seen))).status == 200
    assert (
        await run_js(live, "email_client.mjs", nobody, "reset", sent["sid"], "secret2", "new horse")
        == {}
    )
    signed_in = await run_js(
        live, "email_client.mjs", nobody, "login", "alice@example.org", "new horse"
    )
    assert signed_in == {"user_id": alice["user_id"]}

    # alice's old access token ended with the reset: sign in again to remove the address.
    resp = await live.post(
        "/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "new horse",
        },
    )
    session = await resp.json()
    removed = await run_js(live, "email_client.mjs", session, "delete", "alice@example.org")
    assert removed == {"result": {"id_server_unbind_result": "no-support"}, "threepids": []}
