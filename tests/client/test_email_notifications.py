"""Email notifications (homeserver/push/email_notifier.py), with a real SMTP server on
loopback and a one-second `notif_delay` (Synapse's is ten minutes, fixed).

What a user sees: with Element's "Enable email notifications" (an email pusher on one
of their addresses), messages they leave unread arrive by mail after the delay,
grouped by room, with the room's name and the sender's; what they read in time is not
mailed, nor anything twice (also across a restart). What must not happen: mail to an
address that is not theirs (the pusher is refused; removing the address ends the
mails), script in a message reaching the mail's HTML unescaped, ciphertext in a mail.
Both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user
from tests.client.test_email_threepids import BASE, add_email
from tests.mail_sink import MailSink

V3 = "/_matrix/client/v3"
DELAY_S = 1.0


def settings(sink: MailSink, **email: Any) -> dict[str, Any]:
    section = sink.email_config(
        enable_notifs=True, notif_delay=int(DELAY_S * 1000), client_base_url="https://app.test"
    )
    return {"public_baseurl": BASE, "email": {**section, **email}}


def email_pusher_body(address: str, **extra: Any) -> dict[str, Any]:
    """What Element Web sends when the switch is turned on."""
    return {
        "kind": "email",
        "app_id": "m.email",
        "pushkey": address,
        "app_display_name": "Email Notifications",
        "device_display_name": address,
        "lang": "en",
        "data": {"brand": "Element"},
        "append": True,
        **extra,
    }


async def send(client: Any, token: str, room_id: str, body: str, txn: str, **extra: Any) -> str:
    resp = await client.put(
        f"{V3}/rooms/{room_id}/send/m.room.message/{txn}",
        json={"msgtype": "m.text", "body": body, **extra},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()
    return (await resp.json())["event_id"]


async def two_people(client: Any, sink: MailSink) -> tuple[dict[str, Any], dict[str, Any], str]:
    """alice (with an address and the pusher on it) and bob in a room named Plans."""
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bert")
    await add_email(client, sink, alice, "alice@example.org")
    resp = await client.post(
        f"{V3}/pushers/set",
        json=email_pusher_body("Alice@Example.org"),
        headers=auth(alice["access_token"]),
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        f"{V3}/createRoom",
        json={"name": "Plans", "invite": [alice["user_id"]]},
        headers=auth(bob["access_token"]),
    )
    room_id = (await resp.json())["room_id"]
    resp = await client.post(f"{V3}/join/{room_id}", headers=auth(alice["access_token"]))
    assert resp.status == 200
    return alice, bob, room_id


async def no_mail_for(sink: MailSink, seen: int, seconds: float) -> None:
    await asyncio.sleep(seconds)
    assert len(sink.received) == seen, [m.subject for m in sink.received[seen:]]


async def test_unread_messages_are_mailed_after_the_delay(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    sink: MailSink,
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings, **settings(sink))))
    alice, bob, room_id = await two_people(client, sink)
    resp = await client.get(f"{V3}/pushers", headers=auth(alice["access_token"]))
    [pusher] = (await resp.json())["pushers"]
    assert (pusher["kind"], pusher["pushkey"]) == ("email", "alice@example.org")

    seen = len(sink.received)
    # Both at once: one after the other, a loaded machine (CI) once let the delay pass
    # between them, and the mail rightly told of one.
    await asyncio.gather(
        send(client, bob["access_token"], room_id, "Lunch at noon?", "t1"),
        send(client, bob["access_token"], room_id, "<script>alert(1)</script>", "t2"),
    )
    mail = await sink.mail_after(seen, timeout=DELAY_S * 8)
    assert mail.envelope_to == ["alice@example.org"]
    assert mail.subject == "[Matrix] You have 2 unread messages"
    assert "Plans (https://app.test/#/room/" in mail.text
    assert "bert: Lunch at noon?" in mail.text
    assert "<script>" not in mail.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert f'href="https://app.test/#/room/{room_id}"' in mail.html
    # Nothing twice: the next checks find nothing new.
    await no_mail_for(sink, seen + 1, DELAY_S * 2)


async def test_what_is_read_before_the_delay_is_not_mailed(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    sink: MailSink,
) -> None:
    """A delay of 4 s here: with 1 s, a loaded machine (CI) could let it pass between
    the message and alice's receipt, and the mail would rightly tell of it."""
    config = tmp_config(**database_settings, **settings(sink, notif_delay=4000))
    client = await aiohttp_client(create_app(config))
    alice, bob, room_id = await two_people(client, sink)
    seen = len(sink.received)
    event_id = await send(client, bob["access_token"], room_id, "Never mind", "t3")
    resp = await client.post(
        f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}",
        json={},
        headers=auth(alice["access_token"]),
    )
    assert resp.status == 200
    await no_mail_for(sink, seen, 4 * 2)
    # An unread one after it is mailed: the notifier was running all along.
    await send(client, bob["access_token"], room_id, "Lunch at one?", "t4")
    mail = await sink.mail_after(seen, timeout=4 * 4)
    assert mail.subject == "[Matrix] You have 1 unread message" and "Lunch at one?" in mail.text


async def test_encrypted_messages_and_one_mail_per_delay(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**settings(sink, notif_delay=2000))))
    alice, bob, room_id = await two_people(client, sink)
    seen = len(sink.received)
    resp = await client.put(
        f"{V3}/rooms/{room_id}/send/m.room.encrypted/e1",
        json={
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "SECRETCIPHERTEXT",
            "sender_key": "k",
            "session_id": "s",
            "device_id": "D",
        },
        headers=auth(bob["access_token"]),
    )
    assert resp.status == 200
    first = await sink.mail_after(seen, timeout=16)
    assert "Encrypted message" in first.text and "SECRETCIPHERTEXT" not in first.text
    # Another message at once: not mailed before the delay since the last mail.
    await send(client, bob["access_token"], room_id, "more", "t4")
    second = await sink.mail_after(seen + 1, timeout=16)
    gap = second.received_at - first.received_at
    assert gap >= 2.0 * 0.9, gap
    assert "bert: more" in second.text and "Encrypted" not in second.text


async def test_email_pushers_are_only_for_ones_own_addresses(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**settings(sink))))
    alice, bob, room_id = await two_people(client, sink)
    # bob cannot have alice's address mailed, nor an address nobody holds.
    for address in ("alice@example.org", "nobody@example.org"):
        resp = await client.post(
            f"{V3}/pushers/set", json=email_pusher_body(address), headers=auth(bob["access_token"])
        )
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_THREEPID_NOT_FOUND")
    # alice removes her address: the pusher goes with it, and nothing more is mailed.
    resp = await client.post(
        f"{V3}/account/3pid/delete",
        json={"medium": "email", "address": "alice@example.org"},
        headers=auth(alice["access_token"]),
    )
    assert resp.status == 200
    resp = await client.get(f"{V3}/pushers", headers=auth(alice["access_token"]))
    assert (await resp.json())["pushers"] == []
    seen = len(sink.received)
    await send(client, bob["access_token"], room_id, "hello?", "t1")
    await no_mail_for(sink, seen, DELAY_S * 3)


async def test_an_admin_removing_the_address_stops_the_mails(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    """The pusher stays (the admin API changes addresses only), but an address the
    user no longer holds is never mailed."""
    from tests.admin.conftest import make_env

    client = await aiohttp_client(create_app(tmp_config(**settings(sink))))
    env = await make_env(client)
    alice, bob, room_id = await two_people(client, sink)
    status, _ = await env.call("PUT", f"/v2/users/{alice['user_id']}", json={"threepids": []})
    assert status == 200
    seen = len(sink.received)
    await send(client, bob["access_token"], room_id, "hello?", "t1")
    await no_mail_for(sink, seen, DELAY_S * 3)


async def test_without_enable_notifs_email_pushers_are_refused(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**settings(sink, enable_notifs=False))))
    alice = await register_user(client, "alice")
    await add_email(client, sink, alice, "alice@example.org")
    resp = await client.post(
        f"{V3}/pushers/set",
        json=email_pusher_body("alice@example.org"),
        headers=auth(alice["access_token"]),
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")


async def test_registering_with_an_address_turns_email_notifications_on(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    from tests.client.test_email_threepids import confirm, mailed_link

    client = await aiohttp_client(create_app(tmp_config(**settings(sink))))
    sid, mail = await mailed_link(client, sink, "/register", "carol@example.org", "sec")
    await confirm(client, mail)
    body = {
        "username": "carol",
        "password": "pw pw pw",
        "auth": {
            "type": "m.login.email.identity",
            "threepid_creds": {"sid": sid, "client_secret": "sec"},
        },
    }
    resp = await client.post(f"{V3}/register", json=body)
    assert resp.status == 200, await resp.text()
    carol = await resp.json()
    resp = await client.get(f"{V3}/pushers", headers=auth(carol["access_token"]))
    [pusher] = (await resp.json())["pushers"]
    assert (pusher["kind"], pusher["app_id"], pusher["pushkey"]) == (
        "email",
        "m.email",
        "carol@example.org",
    )


async def test_nothing_is_mailed_twice_across_a_restart(
    aiohttp_client: Any, tmp_config: Callable[..., Config], sink: MailSink
) -> None:
    config = tmp_config(**settings(sink))
    client = await aiohttp_client(create_app(config))
    alice, bob, room_id = await two_people(client, sink)
    seen = len(sink.received)
    await send(client, bob["access_token"], room_id, "before the restart", "t1")
    await sink.mail_after(seen, timeout=DELAY_S * 8)
    await client.close()
    again = await aiohttp_client(create_app(config))
    await no_mail_for(sink, seen + 1, DELAY_S * 3)
    await send(again, bob["access_token"], room_id, "after the restart", "t2")
    mail = await sink.mail_after(seen + 1, timeout=DELAY_S * 8)
    assert "after the restart" in mail.text and "before the restart" not in mail.text
