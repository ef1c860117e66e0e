"""A process serving /sync without writing presence: which of its users are syncing,
told to the presence writer when that changes (ephemeral/remote_syncs.py: its side).

Each /sync used to be two requests to the writer (started, ended): with 2,000 clients
long-polling a reader, every message into their room cost the writer 4,000 requests.
Clients long-poll back to back, so the set of users syncing here rarely changes:
- a user's first sync here is told at once (it may bring them online), batched with
  the other first syncs of the same loop iteration; again only when a sync asks for a
  presence change the row replicated here does not show yet (set_presence differs,
  or the user went offline meanwhile);
- when none of their syncs has run here for LINGER_MS, the writer is told they stopped,
  and how long ago (it times them out from their real last sync);
- every SNAPSHOT_S the whole set goes as a heartbeat: the writer forgets a process it
  has not heard from for a while (killed), and who syncs here, as a lost report or a
  restarted writer left it, is repaired within that time. A snapshot says only who
  syncs (a sync's set_presence applies once, when it starts); a presence change a lost
  report carried is told again by the user's next sync (the row replicated here still
  shows it is needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.ephemeral.remote_syncs import SNAPSHOT_S

from .writers import spawn

log = logging.getLogger(__name__)

# A user none of whose syncs has run here for this long has stopped syncing here (the
# gap between a client's two long-polls is milliseconds).
LINGER_MS = 5_000
TICK_S = 1.0
# Users held as syncing here, at most (a snapshot of this many is ~3.5 MB of JSON,
# under the writer's request body limit); beyond it a user's syncs are not reported
# (they may then time out to offline while syncing, and come back with a later sync).
MAX_USERS = 50_000

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class SyncReporter:
    """Tracks this process's syncs (PresenceService.syncing calls started/ended) and
    tells the writer through `send` (Forwarder.report_syncs: best effort)."""

    def __init__(self, process: str, send: Send, touch_needed: Callable[[str, str], bool]) -> None:
        self._process = process
        self._send = send
        self._touch_needed = touch_needed
        self._running: dict[str, int] = {}  # user -> syncs in progress here
        self._told: dict[str, str] = {}  # user -> set_presence: the writer counts them
        self._idle_since: dict[str, int] = {}  # told users with no sync running here
        self._to_tell: dict[str, str] = {}  # for the next batch
        self._batch_due = False
        self._next_snapshot_ms = 0
        self._told_nobody = False  # the last snapshot was empty
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None

    def started(self, user_id: str, set_presence: str) -> None:
        self._running[user_id] = self._running.get(user_id, 0) + 1
        self._idle_since.pop(user_id, None)
        told = self._told.get(user_id)
        if told is None and len(self._told) >= MAX_USERS:
            return
        if told != set_presence or self._touch_needed(user_id, set_presence):
            self._told[user_id] = set_presence
            self._to_tell[user_id] = set_presence
            if not self._batch_due:
                self._batch_due = True
                asyncio.get_running_loop().call_soon(self._send_batch)

    def ended(self, user_id: str) -> None:
        left = self._running.pop(user_id, 1) - 1
        if left > 0:
            self._running[user_id] = left
        elif user_id in self._told:
            self._idle_since[user_id] = _now_ms()

    def resync(self) -> None:
        """The writer may have restarted (a `resync` on the bus): the whole set now."""
        self._next_snapshot_ms = 0
        self._told_nobody = False

    async def tick(self) -> None:
        """Tell the writer who stopped (idle for LINGER_MS), and the whole set when due."""
        now = _now_ms()
        stopped: dict[str, int] = {}
        for user_id, since in self._idle_since.items():  # oldest first (insertion order)
            if now - since < LINGER_MS:
                break
            stopped[user_id] = now - since
        for user_id in stopped:
            del self._idle_since[user_id]
            del self._told[user_id]
        if stopped:
            await self._send({"process": self._process, "stopped": stopped})
        if now >= self._next_snapshot_ms:
            self._next_snapshot_ms = now + int(SNAPSHOT_S * 1000)
            if self._told or not self._told_nobody:  # (a process nobody syncs on: once)
                self._told_nobody = not self._told
                await self._send({"process": self._process, "snapshot": dict(self._told)})

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="sync reports")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._tasks):
            task.cancel()

    def _send_batch(self) -> None:
        self._batch_due = False
        users, self._to_tell = self._to_tell, {}
        if users:
            spawn(self._send({"process": self._process, "syncing": users}), self._tasks)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except Exception:  # the writer unreachable: the next snapshot repairs it
                log.exception("reporting syncs to the presence writer failed")
