"""Email notifications: a user with an email pusher (Element's "Enable email
notifications") is mailed about the notifications they have not read `notif_delay`
after they arrived (10 minutes by default, as Synapse).

One task on one process (the main) checks every CHECK_INTERVAL_S: a single query
finds the email pushers with notifications past the delay that were not considered
before (storage/email_notifications.py); for each, the unread ones (a read receipt, or
the user's own later message, covers the rest) become one mail grouped by room. The
position considered is stored, so a restart mails nothing twice and nothing read is
mailed; a user gets at most one mail per `notif_delay`, and a failed send is retried
after the same delay.

Bounds: DUE_PER_CHECK pushers per check, MAX_NOTIFICATIONS_PER_MAIL read per mail
(the rest wait for the next), MAX_ROOMS_PER_MAIL and MAX_MESSAGES_PER_ROOM shown, each
message's text cut at MAX_BODY_CHARS; mail goes through the Mailer (4 at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from html import escape
from typing import Any

from homeserver.accounts.mailer import Mail, Mailer, MailError
from homeserver.events import Event
from homeserver.push.delivery import event_names
from homeserver.storage import Stores
from homeserver.storage.email_notifications import (
    DueEmailPusher,
    EmailNotificationStore,
    PendingNotification,
)
from homeserver.storage.push import PushStore

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 60.0
DUE_PER_CHECK = 500
MAX_NOTIFICATIONS_PER_MAIL = 200
MAX_ROOMS_PER_MAIL = 10
MAX_MESSAGES_PER_ROOM = 5
MAX_BODY_CHARS = 300


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(event: Event, include_content: bool = True) -> str:
    """What a line of the mail says an event is (never what it says without
    `include_content`, push.include_content)."""
    content = event.content
    if event.type == "m.room.encrypted":
        return "Encrypted message"
    if event.type == "m.room.member" and content.get("membership") == "invite":
        return "Invited you"
    body = content.get("body")
    if isinstance(body, str) and body and include_content:
        if content.get("msgtype") == "m.emote":
            body = "* " + body
        return body if len(body) <= MAX_BODY_CHARS else body[:MAX_BODY_CHARS] + "…"
    if event.type in ("m.room.message", "m.sticker"):
        return "Message deleted" if not content else "Sent a message"
    return f"Sent {event.type}"


class EmailNotifier:
    def __init__(
        self,
        stores: Stores,
        push: PushStore,
        store: EmailNotificationStore,
        mailer: Mailer,
        server_name: str,
        *,
        delay_ms: int,
        client_base_url: str | None,
        include_content: bool = True,
    ) -> None:
        self._include_content = include_content
        self._stores = stores
        self._push = push
        self._store = store
        self._mailer = mailer
        self._server_name = server_name
        self._delay_ms = delay_ms
        self._client_base_url = client_base_url

    async def run(self) -> None:
        """Check now and every CHECK_INTERVAL_S (at least four times per delay)."""
        interval = max(0.2, min(CHECK_INTERVAL_S, self._delay_ms / 4000))
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("email notifications: the check failed; retrying later")
            await asyncio.sleep(interval)

    async def check_once(self) -> int:
        """Mail whoever is due; the number of mails sent."""
        now = _now_ms()
        cutoff = now - self._delay_ms
        sent = 0
        for pusher in await self._store.due(cutoff, DUE_PER_CHECK):
            if now - pusher.last_sent_ts < self._delay_ms:
                continue  # one mail per delay: these wait for the next
            sent += await self._mail_one(pusher, cutoff, now)
        await self._store.forget_removed()
        return sent

    async def _mail_one(self, pusher: DueEmailPusher, cutoff: int, now: int) -> int:
        pending = await self._store.pending(
            pusher.user_id,
            pusher.last_stream_ordering,
            pusher.created_ts,
            cutoff,
            MAX_NOTIFICATIONS_PER_MAIL,
        )
        if not pending:
            return 0
        last = max(p.stream_ordering for p in pending)
        unread = await self._unread(pusher.user_id, pending)
        if not unread:
            await self._store.record(pusher.user_id, pusher.pushkey, last, pusher.last_sent_ts)
            return 0
        try:
            await self._mailer.send(await self._compose(pusher, unread))
        except MailError:
            # Not advanced: retried after the delay (last_sent_ts throttles the retry).
            await self._store.record(
                pusher.user_id, pusher.pushkey, pusher.last_stream_ordering, now
            )
            return 0
        await self._store.record(pusher.user_id, pusher.pushkey, last, now)
        return 1

    async def _unread(
        self, user_id: str, pending: list[PendingNotification]
    ) -> list[PendingNotification]:
        positions = {
            room_id: await self._push.get_read_positions(user_id, room_id)
            for room_id in {p.room_id for p in pending}
        }
        never = -1
        return [
            p
            for p in pending
            if p.stream_ordering > positions[p.room_id].get("", never)
            and p.stream_ordering > positions[p.room_id].get(p.thread_id, never)
        ]

    def _room_link(self, room_id: str) -> str:
        if self._client_base_url:
            return f"{self._client_base_url}/#/room/{room_id}"
        return f"https://matrix.to/#/{room_id}"

    async def _compose(self, pusher: DueEmailPusher, unread: list[PendingNotification]) -> Mail:
        events = await self._stores.events.get_events([p.event_id for p in unread])
        by_room: dict[str, list[Event]] = defaultdict(list)
        for p in unread:
            event = events.get(p.event_id)
            if event is not None:
                by_room[p.room_id].append(event)
        sections: list[tuple[str, str, list[tuple[str, str]]]] = []
        for room_id, room_events in list(by_room.items())[:MAX_ROOMS_PER_MAIL]:
            names: dict[str, Any] = {}
            lines = []
            for event in room_events[-MAX_MESSAGES_PER_ROOM:]:
                names = await event_names(self._stores, event)
                sender = names.get("sender_display_name") or event.sender
                lines.append((str(sender), _describe(event, self._include_content)))
            room = names.get("room_name") or names.get("room_alias") or "a room"
            sections.append((str(room), self._room_link(room_id), lines))
        count = len(unread)
        app = self._mailer.app_name
        plural = "s" if count != 1 else ""
        subject = f"[{app}] You have {count} unread message{plural}"
        intro = f"You have {count} unread message{plural} on {self._server_name}."
        outro = (
            "You are receiving this because email notifications are on for this address;"
            " turn them off in your client's notification settings."
        )
        text_parts = [intro, ""]
        html_parts = [f"<p>{escape(intro)}</p>"]
        for room, link, lines in sections:
            text_parts.append(f"{room} ({link})")
            text_parts += [f"  {sender}: {body}" for sender, body in lines]
            text_parts.append("")
            html_parts.append(f'<h3><a href="{escape(link)}">{escape(room)}</a></h3><ul>')
            html_parts += [
                f"<li><b>{escape(sender)}</b>: {escape(body)}</li>" for sender, body in lines
            ]
            html_parts.append("</ul>")
        text_parts.append(outro)
        html_parts.append(f"<p>{escape(outro)}</p>")
        return Mail(
            to=pusher.pushkey,
            subject=subject,
            text="\n".join(text_parts) + "\n",
            html="".join(html_parts),
        )
