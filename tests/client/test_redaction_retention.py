"""What a redacted message said leaves the database after redaction_retention_period
(Synapse's key, 7 days by default): the stored JSON is overwritten with the redacted
form, while users keep seeing the event as redacted (with what redacted it) and the
event keeps its ID and signatures. Both backends, through the client API."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.storage._util import now_ms as _now_ms
from homeserver.storage.redaction_retention import RedactionRetention
from tests.client.helpers import auth, register_user
from tests.client.helpers import send_text as _send

C = "/_matrix/client/v3"
DAY_MS = 24 * 3600 * 1000
SECRET = "my card number is 4111-1111"


async def _stored_json(client: Any, event_id: str) -> str:
    db = client.app[STORES].events.db
    return await db.fetchval("SELECT json FROM events WHERE event_id = $1", event_id)


async def test_redacted_content_is_erased_after_the_period(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth(token))
    room = (await resp.json())["room_id"]
    secret = await _send(client, token, room, SECRET)
    kept = await _send(client, token, room, "an ordinary message")
    resp = await client.put(
        f"{C}/rooms/{room}/redact/{secret}/r1", json={"reason": "oops"}, headers=auth(token)
    )
    redaction = (await resp.json())["event_id"]
    assert SECRET in await _stored_json(client, secret)  # kept for moderators, for now

    db = client.app[STORES].events.db
    retention = RedactionRetention(db, 7 * DAY_MS, client.app[STORES].events.forget_cached)
    assert await retention.run() == 0  # not yet due
    assert SECRET in await _stored_json(client, secret)
    assert await retention.run(now=_now_ms() + 8 * DAY_MS) == 1
    stored = await _stored_json(client, secret)
    assert SECRET not in stored and "body" not in stored
    assert "hashes" in stored and "signatures" in stored  # still a valid (redacted) PDU
    assert "ordinary" in await _stored_json(client, kept)  # not redacted: untouched
    assert await retention.run(now=_now_ms() + 9 * DAY_MS) == 0  # done once

    # Users see the same redacted event, with what redacted it.
    resp = await client.get(f"{C}/rooms/{room}/event/{secret}", headers=auth(token))
    event = await resp.json()
    assert event["event_id"] == secret and event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction
    resp = await client.get(f"{C}/rooms/{room}/messages?dir=b&limit=10", headers=auth(token))
    bodies = [e["content"].get("body") for e in (await resp.json())["chunk"]]
    assert SECRET not in bodies and "an ordinary message" in bodies


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({}, 7 * DAY_MS),
        ({"redaction_retention_period": "28d"}, 28 * DAY_MS),
        ({"redaction_retention_period": None}, None),
    ],
    ids=["default", "28d", "forever"],
)
def test_the_period_is_configurable(
    tmp_config: Any, setting: dict[str, Any], expected: Any
) -> None:
    assert tmp_config(**setting).redaction_retention_ms == expected
