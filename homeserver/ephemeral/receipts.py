"""Read receipts (`m.read`, `m.read.private`, threaded) and the fully-read marker.

Receipts are persisted with a `receipts` stream position, allocated by the store inside
its write transaction so positions commit in order and any process of a deployment may
write them (`stream_writers: {receipts: [...]}`). Public receipts of local users go out
as `m.receipt` EDUs to the room's other servers; `apply_remote` takes them in.
`m.read.private` is only ever shown to its owner and never leaves the server.
`m.fully_read` is room account data.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.storage import Stores
from homeserver.storage.receipts import ReceiptStore
from homeserver.sync.notifier import Notifier

from .account_data import FULLY_READ_TYPE, AccountDataService
from .edus import EduOutbox

READ = "m.read"
READ_PRIVATE = "m.read.private"
RECEIPT_TYPES = (READ, READ_PRIVATE, FULLY_READ_TYPE)


class ReceiptsService:
    def __init__(
        self,
        stores: Stores,
        store: ReceiptStore,
        account_data: AccountDataService,
        notifier: Notifier,
        outbox: EduOutbox,
        position: int,
    ) -> None:
        self._stores = stores
        self._store = store
        self._account_data = account_data
        self._notifier = notifier
        self._outbox = outbox
        self._position = position

    @property
    def position(self) -> int:
        return self._position

    async def _check(self, room_id: str, user_id: str, event_id: str) -> None:
        if await self._stores.current_state.get_membership(room_id, user_id) != "join":
            raise forbidden("You are not in this room")
        event = await self._stores.events.get_event(event_id)
        if event is None or event.room_id != room_id:
            raise not_found("Unknown event")

    async def set_local(
        self,
        room_id: str,
        user_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None = None,
    ) -> None:
        """A local user's receipt or read marker (checks membership and the event)."""
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown receipt type {receipt_type}")
        await self._check(room_id, user_id, event_id)
        if receipt_type == FULLY_READ_TYPE:
            await self._account_data.put(user_id, FULLY_READ_TYPE, {"event_id": event_id}, room_id)
            return
        ts = int(time.time() * 1000)
        await self._write(room_id, receipt_type, user_id, thread_id or "", event_id, ts)
        if receipt_type == READ:
            data: dict[str, Any] = {"ts": ts}
            if thread_id:
                data["thread_id"] = thread_id
            hosts = await self._stores.current_state.get_joined_hosts(room_id)
            content = {room_id: {READ: {user_id: {"event_ids": [event_id], "data": data}}}}
            await self._outbox.send("m.receipt", content, hosts)

    async def apply_remote(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_ids: list[str],
        data: dict[str, Any] | None = None,
    ) -> None:
        """A receipt from an `m.receipt` EDU (origin already checked by federation)."""
        if receipt_type != READ or not event_ids:
            return
        data = data or {}
        ts = data.get("ts")
        thread_id = data.get("thread_id")
        await self._write(
            room_id,
            READ,
            user_id,
            thread_id if isinstance(thread_id, str) else "",
            event_ids[-1],
            ts if isinstance(ts, int) and not isinstance(ts, bool) else int(time.time() * 1000),
        )

    async def _write(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, ts: int
    ) -> None:
        pos = await self._store.write(room_id, receipt_type, user_id, thread_id, event_id, ts)
        self._position = max(self._position, pos)
        if receipt_type == READ_PRIVATE:
            self._notifier.notify("receipts", pos, users=[user_id])
        else:
            self._notifier.notify("receipts", pos, rooms=[room_id])

    async def receipts_for_sync(
        self, user_id: str, room_ids: Iterable[str], since: int | None, upto: int
    ) -> dict[str, dict[str, Any]]:
        """room_id -> the `m.receipt` event to put in that room's ephemeral section."""
        rooms = set(room_ids)
        if not rooms:
            return {}
        if since is None:
            receipts = await self._store.get_for_rooms(rooms)
        else:
            if since >= upto:
                return {}
            receipts = [r for r in await self._store.get_since(since, upto) if r.room_id in rooms]
        by_room: dict[str, dict[str, Any]] = defaultdict(dict)
        for r in receipts:
            if r.stream_id > upto or (r.receipt_type == READ_PRIVATE and r.user_id != user_id):
                continue
            data: dict[str, Any] = {"ts": r.ts}
            if r.thread_id:
                data["thread_id"] = r.thread_id
            by_room[r.room_id].setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[
                r.user_id
            ] = data
        return {
            room: {"type": "m.receipt", "content": content} for room, content in by_room.items()
        }
