"""Sending notifications to push gateways (Push Gateway API v1, HTTP pushers).

Every notifying push action (homeserver.push.actions) is handed here; each of the
user's HTTP pushers gets a `POST {data.url}` (/_matrix/push/v1/notify) with the event,
the sender's and room's names, the badge count and the tweaks of the matching rule, or
only the IDs and counts when the pusher asked for `format: event_id_only`. A gateway
that answers `rejected` for a pushkey loses that pusher (the app was uninstalled).

Each pusher has its own queue and worker: notifications are sent in order, one at a
time; a failure (no answer, 5xx, 429) is retried with exponential backoff from
RETRY_MIN_S to RETRY_MAX_S, and a notification older than GIVE_UP_AFTER_S is dropped.
Bounds: QUEUE_LIMIT notifications waiting per pusher (the oldest go first), the
gateway's answer read up to MAX_RESPONSE_BYTES, REQUEST_TIMEOUT_S per request, and
every connection goes through the outbound IP policy (ip_range_blacklist, as for
federation), checked where the name resolves and on redirects (none are followed).
Queues live in memory: a restart drops what had not been delivered yet (a phone then
learns of the message at its next sync).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from homeserver.config.model import PushSettings
from homeserver.events import Event
from homeserver.ipfilter import FilteringResolver, IPBlockedError, IPFilter, ip_literal_guard
from homeserver.storage import Stores
from homeserver.storage.push import PushAction, PushStore, StoredPusher

log = logging.getLogger(__name__)

QUEUE_LIMIT = 100
INCOMING_LIMIT = 10_000  # notifications waiting to be turned into requests
RETRY_MIN_S = 1.0
RETRY_MAX_S = 3600.0
GIVE_UP_AFTER_S = 24 * 3600.0
REQUEST_TIMEOUT_S = 20.0
MAX_RESPONSE_BYTES = 64 * 1024
MAX_CONTENT_BYTES = 4096  # of an event's content copied into a notification


@dataclass
class _Pending:
    body: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    not_before: float = 0.0  # monotonic time before which it is not sent (jitter_delay)


def tweaks_of(actions: Sequence[Any]) -> dict[str, Any]:
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and action.get("set_tweak") in ("sound", "highlight"):
            name = action["set_tweak"]
            tweaks[name] = action.get("value", True if name == "highlight" else None)
    return {k: v for k, v in tweaks.items() if v is not None}


def _priority(event: Event, actions: Sequence[Any]) -> str:
    """high for encrypted events and for what highlights or makes a sound."""
    if event.type == "m.room.encrypted" or tweaks_of(actions):
        return "high"
    return "low"


def _device(pusher: StoredPusher, tweaks: dict[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ts // 1000,
        # Everything the client put in `data` but the URL (e.g. default_payload).
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
    }
    if tweaks:
        device["tweaks"] = tweaks
    return device


async def event_names(stores: Stores, event: Event) -> dict[str, Any]:
    """The sender's display name, the room's name and alias (a few state rows)."""
    current = stores.current_state
    ids = {
        key: await current.get_current_state_event_id(event.room_id, *key)
        for key in (
            ("m.room.name", ""),
            ("m.room.canonical_alias", ""),
            ("m.room.member", event.sender),
        )
    }
    loaded = await stores.events.get_events([i for i in ids.values() if i])

    def field(key: tuple[str, str], name: str) -> Any:
        found = loaded.get(ids[key] or "")
        return found.content.get(name) if found is not None else None

    names: dict[str, Any] = {}
    display = field(("m.room.member", event.sender), "displayname")
    if isinstance(display, str):
        names["sender_display_name"] = display
    room_name = field(("m.room.name", ""), "name")
    if isinstance(room_name, str) and room_name:
        names["room_name"] = room_name
    alias = field(("m.room.canonical_alias", ""), "alias")
    if isinstance(alias, str):
        names["room_alias"] = alias
    return names


class PushDelivery:
    def __init__(
        self,
        stores: Stores,
        push_store: PushStore,
        ip_filter: IPFilter,
        server_name: str,
        *,
        settings: PushSettings = PushSettings(),
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._push = push_store
        self._filter = ip_filter
        self._server_name = server_name
        self._session: aiohttp.ClientSession | None = None
        self._session_factory = session_factory
        self._queues: dict[tuple[str, str, str], deque[_Pending]] = {}
        self._workers: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._closed = False
        # What the action generator handed over: built into requests by one worker, off
        # the generator's path (delivery never delays counting, let alone sending).
        self._incoming: deque[tuple[Sequence[PushAction], dict[str, Event]] | str] = deque()
        self._builder: asyncio.Task[None] | None = None
        # Set on the writer when pusher workers send (homeserver.replication.pushers):
        # what would be queued here is handed to it instead.
        self.forward: Any = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._session_factory is not None:
                self._session = self._session_factory()
            else:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(
                        resolver=FilteringResolver(self._filter), limit=100, limit_per_host=10
                    ),
                    headers={"User-Agent": "homeserver-py push", "Accept-Encoding": "identity"},
                    auto_decompress=False,
                    trace_configs=[ip_literal_guard(self._filter)],
                )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._builder is not None:
            self._builder.cancel()
        for task in list(self._workers.values()):
            task.cancel()
        if self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- from the push action generator --------------------------------------------------

    def notify(self, rows: Sequence[PushAction], events: dict[str, Event]) -> None:
        """Queue a notification for every HTTP pusher of each notified user."""
        if self.forward is not None:
            self.forward.notify(rows, events)
        else:
            self._hand_over((rows, events))

    def badge_update(self, user_id: str) -> None:
        """The user read something: their apps' badges get the new number."""
        if self.forward is not None:
            self.forward.badge_update(user_id)
        else:
            self._hand_over(user_id)

    def _hand_over(self, item: tuple[Sequence[PushAction], dict[str, Event]] | str) -> None:
        if self._closed:
            return
        if len(self._incoming) >= INCOMING_LIMIT:
            self._incoming.popleft()
            log.warning("push delivery is behind: dropped the oldest waiting notification")
        self._incoming.append(item)
        if self._builder is None or self._builder.done():
            self._builder = asyncio.get_running_loop().create_task(self._build_requests())

    async def _build_requests(self) -> None:
        while self._incoming:
            item = self._incoming.popleft()
            try:
                if isinstance(item, str):
                    await self._badge_requests(item)
                else:
                    await self._notification_requests(*item)
            except Exception:
                log.exception("building push notifications failed")

    async def _badge_requests(self, user_id: str) -> None:
        pushers = [
            p for p in await self._push.get_pushers(user_id) if p.kind == "http" and p.enabled
        ]
        if not pushers:
            return
        badge = await self._badge(user_id)
        for pusher in pushers:
            body = {
                "notification": {
                    "id": "",
                    "type": None,
                    "sender": "",
                    "counts": {"unread": badge},
                    "devices": [_device(pusher, {})],
                }
            }
            self._enqueue(pusher, body)

    async def _notification_requests(
        self, rows: Sequence[PushAction], events: dict[str, Event]
    ) -> None:
        # What every recipient of an event is told the same (names), read once per event:
        # an event in a room of 1,000 pushers is 1,000 notifications, not 1,000 reads.
        shared: dict[str, dict[str, Any]] = {}
        for row in rows:
            if not row.notif:
                continue
            pushers = [
                p
                for p in await self._push.get_pushers(row.user_id)
                if p.kind == "http" and p.enabled
            ]
            if not pushers:
                continue
            event = events.get(row.event_id)
            if event is None:
                continue
            if event.event_id not in shared:
                shared[event.event_id] = await event_names(self._stores, event)
            base = await self._notification(row, event, shared[event.event_id])
            not_before = self._jitter(event)
            for pusher in pushers:
                self._enqueue(pusher, self._for_pusher(base, pusher, row), not_before)

    def _jitter(self, event: Event) -> float:
        """When the push of `event` may go (push.jitter_delay): a random moment up to
        the delay after the event was sent, not after now, so a burst of pushes is
        not delayed one after another."""
        jitter_ms = self._settings.jitter_delay_ms
        if not jitter_ms:
            return 0.0
        wait_ms = event.origin_server_ts + random.randint(1, jitter_ms) - time.time() * 1000
        return time.monotonic() + max(0.0, min(wait_ms, jitter_ms)) / 1000

    async def _notification(
        self, row: PushAction, event: Event, names: dict[str, Any]
    ) -> dict[str, Any]:
        notification: dict[str, Any] = {
            "event_id": event.event_id,
            "room_id": row.room_id,
            "type": event.type,
            "sender": event.sender,
            "prio": _priority(event, row.actions),
            "counts": {"unread": await self._badge(row.user_id)},
            **names,
        }
        if event.type == "m.room.member":
            notification["membership"] = event.content.get("membership")
            notification["user_is_target"] = event.state_key == row.user_id
        content = event.content
        if self._settings.include_content and len(str(content)) <= MAX_CONTENT_BYTES:
            notification["content"] = content
        return notification

    async def _badge(self, user_id: str) -> int:
        """The app icon's number: invites plus rooms with unread notifications
        (Synapse's default, push.group_unread_count_by_room), or plus the unread
        notifications themselves when that is off."""
        by_room = self._settings.group_unread_count_by_room
        memberships = await self._stores.current_state.get_memberships_for_user(user_id)
        unread = sum(1 for m in memberships if m.membership == "invite")
        for room_id in (m.room_id for m in memberships if m.membership == "join"):
            counts = await self._push.get_current_unread_counts(user_id, room_id)
            notifications = sum(c.notifications for c in counts.values())
            unread += min(notifications, 1) if by_room else notifications
        return unread

    @staticmethod
    def _for_pusher(base: dict[str, Any], pusher: StoredPusher, row: PushAction) -> dict[str, Any]:
        device = _device(pusher, tweaks_of(row.actions))
        if pusher.data.get("format") == "event_id_only":
            keep = ("event_id", "room_id", "counts", "prio")
            notification = {k: base[k] for k in keep if k in base}
        else:
            notification = dict(base)
        notification["devices"] = [device]
        return {"notification": notification}

    # -- per pusher queues -----------------------------------------------------------------

    def _enqueue(self, pusher: StoredPusher, body: dict[str, Any], not_before: float = 0.0) -> None:
        key = (pusher.user_id, pusher.app_id, pusher.pushkey)
        queue = self._queues.setdefault(key, deque())
        if len(queue) >= QUEUE_LIMIT:
            queue.popleft()
        queue.append(_Pending(body, not_before=not_before))
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.get_running_loop().create_task(
                self._work(key, pusher.data["url"])
            )

    async def _work(self, key: tuple[str, str, str], url: str) -> None:
        queue = self._queues[key]
        delay = RETRY_MIN_S
        try:
            while queue:
                pending = queue[0]
                if time.monotonic() - pending.created > GIVE_UP_AFTER_S:
                    queue.popleft()
                    continue
                if pending.not_before > time.monotonic():
                    await asyncio.sleep(pending.not_before - time.monotonic())
                outcome = await self._send(url, pending.body)
                if outcome == "retry":
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_MIN_S
                queue.popleft()
                if isinstance(outcome, list) and key[2] in outcome:
                    log.info("push gateway rejected pushkey of %s: removing the pusher", key[0])
                    await self._push.delete_pusher(*key)
                    queue.clear()
        finally:
            if not queue:
                self._queues.pop(key, None)
                self._workers.pop(key, None)

    async def _send(self, url: str, body: dict[str, Any]) -> str | list[str]:
        """ "ok", "drop" (the gateway refused it), "retry", or the rejected pushkeys."""
        try:
            async with self._get_session().post(
                url,
                json=body,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                allow_redirects=False,
            ) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BYTES)
                if resp.status == 429 or resp.status >= 500:
                    return "retry"
                if resp.status != 200:
                    log.info("push gateway %s answered %d: dropped", url[:100], resp.status)
                    return "drop"
                try:
                    answer = json.loads(raw) if raw else {}
                except ValueError:
                    return "ok"
                rejected = answer.get("rejected") if isinstance(answer, dict) else None
                if isinstance(rejected, list):
                    return [r for r in rejected if isinstance(r, str)]
                return "ok"
        except IPBlockedError:
            log.info("push gateway %s is on a blocked address: dropped", url[:100])
            return "drop"
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            log.info("push gateway %s: %s; will retry", url[:100], type(e).__name__)
            return "retry"
