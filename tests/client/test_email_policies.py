"""What an operator may decide about email addresses (homeserver/accounts/threepids.py):
rc_3pid_validation per address, allowed_local_3pids, request_token_inhibit_3pid_errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import register_user
from tests.client.test_email_threepids import V3, add_email, email_settings, request_token
from tests.mail_sink import MailSink


async def test_request_token_is_rate_limited_per_address(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    settings = email_settings(
        sink, rc_enabled=True, rc_3pid_validation={"per_second": 0.001, "burst_count": 2}
    )
    settings.update(rc_registration={"per_second": 100, "burst_count": 100})
    settings.update(rc_login={"address": {"per_second": 100, "burst_count": 100}})
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    statuses = []
    for attempt in range(1, 4):
        resp = await request_token(client, "/register", "x@example.org", "s", attempt)
        statuses.append(resp.status)
    assert statuses == [200, 200, 429]
    assert len(sink.received) == 2


async def test_allowed_addresses_and_inhibited_errors(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    """allowed_local_3pids limits which addresses may be added or registered;
    request_token_inhibit_3pid_errors answers an address in use (or unknown, for a
    reset) like any other, mailing nothing, so nobody learns which have accounts."""
    settings = email_settings(
        sink,
        allowed_local_3pids=[{"medium": "email", "pattern": r"^[^@]+@example\.org$"}],
        request_token_inhibit_3pid_errors=True,
    )
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    resp = await request_token(client, "/register", "a@elsewhere.org", "s")
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_THREEPID_DENIED")
    await add_email(client, sink, alice, "alice@example.org")
    seen = len(sink.received)
    for path, email in (("/register", "alice@example.org"), ("/account/password", "x@example.org")):
        resp = await request_token(client, path, email, "s")
        assert resp.status == 200, await resp.text()
        sid = (await resp.json())["sid"]
        assert sid
    assert len(sink.received) == seen
    # The made-up sid leads nowhere.
    body = {
        "new_password": "x",
        "auth": {
            "type": "m.login.email.identity",
            "threepid_creds": {"sid": sid, "client_secret": "s"},
        },
    }
    resp = await client.post(f"{V3}/account/password", json=body)
    assert resp.status == 401
