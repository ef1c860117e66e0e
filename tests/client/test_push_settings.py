"""The operator's `push:` section (Synapse's keys), seen by a fake push gateway and by
the users: what a notification may say (include_content), what the badge counts
(group_unread_count_by_room), when a push goes (jitter_delay), and push switched off
(enabled: false: no pushes, no unread counts)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.config import load_config
from tests.client.test_email_notifications import DELAY_S, send, two_people
from tests.client.test_email_notifications import settings as email_settings
from tests.client.test_push_delivery import C, Gateway, gateway, say, setup_pair
from tests.mail_sink import MailSink

__all__ = ["gateway"]  # the fixture, used by name


async def _client(aiohttp_client: Any, tmp_config: Any, **push: Any) -> TestClient:
    config = tmp_config(ip_range_whitelist=["127.0.0.0/8"], push=push)
    return await aiohttp_client(create_app(config))


async def _unread(client: TestClient, headers: dict[str, str], room: str) -> int:
    resp = await client.get(f"{C}/sync?timeout=0", headers=headers)
    body = await resp.json()
    return body["rooms"]["join"][room]["unread_notifications"]["notification_count"]


async def test_without_content_the_gateway_learns_who_and_where_not_what(
    aiohttp_client: Any, tmp_config: Any, gateway: Gateway
) -> None:
    client = await _client(aiohttp_client, tmp_config, include_content=False)
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    event_id = await say(client, b, room, "the launch code is 0000")
    (body,) = await gateway.wait_for(1)
    n = body["notification"]
    assert n["event_id"] == event_id and n["sender"] == bob["user_id"]
    assert n["sender_display_name"] == "Bob B" and n["room_name"] == "Tea"
    assert "content" not in n
    assert "0000" not in str(body)
    assert await _unread(client, a, room) == 1  # counts are unaffected


@pytest.mark.parametrize(
    ("grouped", "badges"), [(True, [1, 1, 1]), (False, [1, 2, 3])], ids=["rooms", "messages"]
)
async def test_the_badge_counts_messages_when_not_grouped_by_room(
    aiohttp_client: Any, tmp_config: Any, gateway: Gateway, grouped: bool, badges: list[int]
) -> None:
    client = await _client(aiohttp_client, tmp_config, group_unread_count_by_room=grouped)
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    for i in range(3):
        await say(client, b, room, f"message {i}")
        await gateway.wait_for(i + 1)
    assert [r["notification"]["counts"]["unread"] for r in gateway.received] == badges


async def test_jitter_delays_each_push_up_to_the_delay_after_its_message(
    aiohttp_client: Any, tmp_config: Any, gateway: Gateway
) -> None:
    client = await _client(aiohttp_client, tmp_config, jitter_delay="1500ms")
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    sent = time.monotonic()
    await say(client, b, room, "one")
    await say(client, b, room, "two")
    arrived = []
    for n in (1, 2):
        await gateway.wait_for(n, timeout=5)
        arrived.append(time.monotonic() - sent)
    # Each goes at a random moment within 1.5 s of its message, not one delay after
    # the other (both within the delay, plus slack for a loaded machine).
    assert all(t < 1.5 + 1.0 for t in arrived), arrived


async def test_jitter_is_random_not_immediate(
    aiohttp_client: Any, tmp_config: Any, gateway: Gateway
) -> None:
    """Over a few pushes at least one waits noticeably (an immediate push every time
    would mean the setting did nothing): P(all 5 under 0.2 s of a 3 s jitter) ≈ 3e-6."""
    client = await _client(aiohttp_client, tmp_config, jitter_delay="3s")
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    waits = []
    for i in range(5):
        sent = time.monotonic()
        await say(client, b, room, f"m{i}")
        await gateway.wait_for(i + 1, timeout=10)
        waits.append(time.monotonic() - sent)
    assert max(waits) > 0.2, waits
    assert max(waits) < 3 + 1.5, waits


async def test_push_switched_off_counts_and_pushes_nothing(
    aiohttp_client: Any, tmp_config: Any, gateway: Gateway
) -> None:
    client = await _client(aiohttp_client, tmp_config, enabled=False)
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    mention = await say(client, b, room, "alice: are you there?")
    # Sync answers at once, with nothing counted (no rule ran), and nothing is pushed.
    async with asyncio.timeout(5):
        assert await _unread(client, a, room) == 0
    resp = await client.get(f"{C}/notifications", headers=a)
    assert (await resp.json())["notifications"] == []
    await asyncio.sleep(0.5)
    assert gateway.received == []
    assert mention


@pytest.mark.parametrize(
    ("push", "problem"),
    [
        ({"jitter_delay": "2h"}, "push.jitter_delay"),
        ({"include_content": "no"}, "push.include_content"),
        ({"redact": True}, "push.redact"),
    ],
)
def test_bad_push_settings_are_refused(tmp_path: Any, push: Any, problem: str) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text(f"server_name: example.org\npush: {push!r}\n".replace("'", '"'))
    with pytest.raises(Exception, match=problem):
        load_config(path)


async def test_without_content_notification_mails_say_who_not_what(
    aiohttp_client: Any, tmp_config: Any, sink: MailSink
) -> None:
    """push.include_content governs the mails too (Synapse's email.redact_content
    became it): the room and the sender, never the words."""
    config = tmp_config(**email_settings(sink), push={"include_content": False})
    client = await aiohttp_client(create_app(config))
    alice, bob, room_id = await two_people(client, sink)
    seen = len(sink.received)
    await send(client, bob["access_token"], room_id, "the launch code is 0000", "t1")
    mail = await sink.mail_after(seen, timeout=DELAY_S * 8)
    assert mail.subject == "[Matrix] You have 1 unread message"
    assert "bert: Sent a message" in mail.text and "Plans" in mail.text
    assert "0000" not in mail.text and "0000" not in mail.html
