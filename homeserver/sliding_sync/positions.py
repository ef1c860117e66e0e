"""Connection positions: the recent ones in memory, every one in the database.

Each sliding sync response stores a position that the client's next request names.
Writing it inside the request put a commit (and reading it back a query) on every
long-poll. Here a new position is kept in memory (the snapshot as its JSON bytes) and
written to the database right after the response, in order per connection; the next
request finds it in memory. The database copy is what other processes (workers) and a
restarted server read; a position whose write a crash cut short is unknown afterwards
(400 M_UNKNOWN_POS: the client starts the connection over, as MSC4186 allows).

Bounds: MEMORY_BUDGET bytes of snapshots, least recently used dropped first (they are
then read from the database); one write in flight per connection, later ones chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict

import orjson

from homeserver.storage.sliding_sync import (
    MAX_CONNECTIONS_PER_DEVICE,
    SlidingSyncStore,
    Snapshot,
)

log = logging.getLogger(__name__)

MEMORY_BUDGET = 32 * 1024 * 1024
ConnKey = tuple[str, str, str]  # user, device, conn_id


def _dumps(rooms: dict) -> bytes:
    """orjson is several times faster; a room ID with a lone surrogate (which a hostile
    server can put in an event) makes it refuse, and then the stdlib writes it."""
    try:
        return orjson.dumps(rooms)
    except TypeError:
        return json.dumps(rooms, separators=(",", ":")).encode()


def _loads(data: bytes) -> dict:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class Positions:
    def __init__(self, store: SlidingSyncStore, budget: int = MEMORY_BUDGET) -> None:
        self._store = store
        self._budget = budget
        self._recent: OrderedDict[tuple[ConnKey, int], tuple[str, bytes]] = OrderedDict()
        self._by_conn: dict[ConnKey, set[int]] = {}
        # Per device, its connections least recently used first: the database keeps
        # MAX_CONNECTIONS_PER_DEVICE of them, and so does memory.
        self._by_device: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._bytes = 0
        self._writes: dict[ConnKey, asyncio.Task[None]] = {}

    async def get(self, user_id: str, device_id: str, conn_id: str, pos: int) -> Snapshot | None:
        key = ((user_id, device_id, conn_id), pos)
        hit = self._recent.get(key)
        if hit is not None:
            self._recent.move_to_end(key)
            return Snapshot(hit[0], _loads(hit[1]))
        # Not in memory: the database answers once this device's writes have landed
        # (one of them may drop the position asked for).
        pending = [t for k, t in self._writes.items() if k[:2] == (user_id, device_id)]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return await self._store.get(user_id, device_id, conn_id, pos)

    def put(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        pos: int,
        snapshot: Snapshot,
        keep: int | None,
    ) -> None:
        """Remember the position now; write it (dropping the connection's others but
        `keep`) in the background."""
        conn: ConnKey = (user_id, device_id, conn_id)
        data = _dumps(snapshot.rooms)
        for old in list(self._by_conn.get(conn, ())):
            if old != keep:
                self._forget((conn, old))
        conns = self._by_device.setdefault((user_id, device_id), OrderedDict())
        conns[conn_id] = None
        conns.move_to_end(conn_id)
        while len(conns) > MAX_CONNECTIONS_PER_DEVICE:
            dropped = next(iter(conns))
            for old in list(self._by_conn.get((user_id, device_id, dropped), ())):
                self._forget(((user_id, device_id, dropped), old))
            conns.pop(dropped, None)
        self._remember((conn, pos), (snapshot.token, data))
        previous = self._writes.get(conn)

        async def write() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await self._store.put(
                    user_id, device_id, conn_id, pos, snapshot, keep, rooms_json=data.decode()
                )
            except Exception:  # the position still works in this process
                log.exception("storing a sliding sync position failed")

        task = asyncio.get_running_loop().create_task(write())
        self._writes[conn] = task
        task.add_done_callback(
            lambda t: self._writes.pop(conn, None) if self._writes.get(conn) is t else None
        )

    def _remember(self, key: tuple[ConnKey, int], value: tuple[str, bytes]) -> None:
        self._recent[key] = value
        self._by_conn.setdefault(key[0], set()).add(key[1])
        self._bytes += len(value[1])
        while self._bytes > self._budget and self._recent:
            self._forget(next(iter(self._recent)))

    def _forget(self, key: tuple[ConnKey, int]) -> None:
        value = self._recent.pop(key, None)
        if value is None:
            return
        self._bytes -= len(value[1])
        positions = self._by_conn.get(key[0])
        if positions is not None:
            positions.discard(key[1])
            if not positions:
                del self._by_conn[key[0]]
                user_id, device_id, conn_id = key[0]
                conns = self._by_device.get((user_id, device_id))
                if conns is not None:
                    conns.pop(conn_id, None)
                    if not conns:
                        del self._by_device[(user_id, device_id)]

    async def close(self) -> None:
        """At shutdown: finish the writes in flight."""
        pending = list(self._writes.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
