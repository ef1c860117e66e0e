"""Presence: online / unavailable / offline with status message and activity.

All known presence is held in memory (loaded at startup) with an update log ordered by
stream position, so a sync asks "who changed since X" without a query. Rows are written
to the database behind (homeserver.write_behind, every PRESENCE_FLUSH_S) only to survive
a restart: a request never waits for a presence write, and a crash loses at most that
long of presence changes (stream positions from before a crash are clamped by /sync). Presence is
shown to users who share a room; updates of local users go to the servers of those
rooms as `m.presence` EDUs.

Local presence also changes on its own (what users expect, and what Synapse does):
- a /sync with set_presence=online (the default) brings an offline user online, and
  while any of a user's syncs is in progress they never go offline;
- an action (sending an event, explicitly setting "online") bumps last_active;
- an online user with no action for `idle_timeout_ms` becomes "unavailable";
- a user with no sync in progress and none finished (and no action) for
  `sync_timeout_ms` becomes "offline" (all their clients are gone).
Syncing alone is not activity: a client left open on an idle desk goes unavailable.
One background task (start()/close(), owned by the composition module) checks a
DeadlineQueue every `check_interval_s`, touching only users whose deadline is due.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, Protocol

from homeserver.storage.presence import PresenceRow, PresenceStore
from homeserver.sync.joined_rooms import JoinedRoomsCache
from homeserver.sync.notifier import Notifier
from homeserver.write_behind import WriteBehind

from .deadlines import DeadlineQueue
from .edus import EduOutbox
from .remote_syncs import RemoteSyncs

log = logging.getLogger(__name__)

STATES = ("online", "unavailable", "offline")
# Activity within this window counts as "currently active".
ACTIVE_WINDOW_MS = 60_000
# An action refreshes the stored last_active at most this often (no write per action).
REFRESH_MS = 60_000
# Changed rows are written to the database together this often.
PRESENCE_FLUSH_S = 2.0
# A worker reports a user's action to the main once per presence row it changes, or
# again after this long; the users remembered for it are bounded (all forgotten at once
# beyond that: a forgotten user is at worst reported once more).
REPORT_AGAIN_MS = 10_000
MAX_REPORTED = 100_000

# Hands a user's own change to the writer: its new row as JSON (None: no row).
ForwardSet = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
# Decides a user's new row from the current one (None: no change), under the lock.
Decision = Callable[[PresenceRow | None, int], PresenceRow | None]


def row_from_json(data: Any) -> PresenceRow | None:
    """A row as the writer sent it (dataclasses.asdict), None if it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        row = PresenceRow(**data)
    except TypeError:
        return None
    fields = (row.user_id, row.state, row.last_active_ts, row.stream_id)
    if not (
        isinstance(fields[0], str)
        and fields[1] in STATES
        and isinstance(row.status_msg, str | None)
        and all(isinstance(n, int) and not isinstance(n, bool) for n in fields[2:])
    ):
        return None
    return row


class SyncReports(Protocol):
    """Where a process that does not write presence tells of its users' syncs
    (homeserver.replication.sync_reports: the writer hears of changes only)."""

    def started(self, user_id: str, set_presence: str) -> None: ...

    def ended(self, user_id: str) -> None: ...


def _touch_changes(old: PresenceRow | None, state: str) -> bool:
    """Whether a sync with `set_presence=state` changes the row `old` (see touch)."""
    return old is None or not (old.state == state or (state == "online" and old.state != "offline"))


def _now_ms() -> int:
    return int(time.time() * 1000)


class PresenceService:
    # Defaults of the constructor arguments (tests shorten them; no config keys).
    IDLE_TIMEOUT_MS = 5 * 60_000
    SYNC_TIMEOUT_MS = 30_000
    CHECK_INTERVAL_S = 5.0
    # Timer work per wake-up, so one tick never holds the loop for long.
    MAX_PER_TICK = 500

    def __init__(
        self,
        store: PresenceStore,
        rooms: JoinedRoomsCache,
        notifier: Notifier,
        outbox: EduOutbox,
        server_name: str,
        *,
        idle_timeout_ms: int | None = None,
        sync_timeout_ms: int | None = None,
        check_interval_s: float | None = None,
        mode: str = "on",
    ) -> None:
        # presence.enabled (config/presence.py): "untracked" changes nobody's presence
        # on its own (no sync, action or timer does); "off" keeps, shows and sends none.
        self._tracked = mode == "on"
        self._off = mode == "off"
        self._store = store
        self._rooms = rooms
        self._notifier = notifier
        self._outbox = outbox
        self._server_name = server_name
        self._position = 0
        self._state: dict[str, PresenceRow] = {}
        self._log: OrderedDict[str, int] = OrderedDict()  # user -> position, oldest first
        self._lock = asyncio.Lock()
        self._writes: WriteBehind[str, PresenceRow] = WriteBehind(
            self._write_rows, name="presence", interval_s=PRESENCE_FLUSH_S
        )
        self.idle_timeout_ms = self.IDLE_TIMEOUT_MS if idle_timeout_ms is None else idle_timeout_ms
        self.sync_timeout_ms = self.SYNC_TIMEOUT_MS if sync_timeout_ms is None else sync_timeout_ms
        self.check_interval_s = (
            self.CHECK_INTERVAL_S if check_interval_s is None else check_interval_s
        )
        # Local users only: syncs in progress, when the last one ended, exact last action.
        self._syncing: dict[str, int] = {}
        # The writer: users syncing on the processes that report to it.
        self._remote_syncs = RemoteSyncs()
        # A process that does not write presence (homeserver.replication: a worker, or
        # the main when a worker is named `stream_writers: {presence: [...]}`) tells the
        # writer when a user starts and stops syncing there, of actions (user), explicit
        # changes (answered with the new row, adopted here at once) and other servers'
        # updates instead: one process writes presence, so its positions come from one
        # counter and one set of timers decides idleness.
        self.forward_syncing: SyncReports | None = None
        self.forward_active: Callable[[str], None] | None = None
        self.forward_set: ForwardSet | None = None
        self.forward_remote: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        # A worker: user -> (position of the row, when) of the last action reported.
        self._reported: dict[str, tuple[int, int]] = {}
        self._last_sync_ms: dict[str, int] = {}
        self._active_ms: dict[str, int] = {}
        self._timers = DeadlineQueue()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def position(self) -> int:
        return self._position

    async def load(self) -> None:
        rows = sorted(await self._store.get_all(), key=lambda r: r.stream_id)
        for row in rows:
            self._state[row.user_id] = row
            self._log[row.user_id] = row.stream_id
        self._position = rows[-1].stream_id if rows else 0
        # Users still online/unavailable from before a restart: their clients get one sync
        # timeout to come back (O(users) once, at startup only).
        now = _now_ms()
        for row in rows:
            if row.state != "offline" and self._is_local(row.user_id):
                self._last_sync_ms[row.user_id] = now
                self._reschedule(row.user_id, now)

    @property
    def is_off(self) -> bool:
        return self._off

    def get(self, user_id: str) -> PresenceRow | None:
        return None if self._off else self._state.get(user_id)

    def format(self, row: PresenceRow, now_ms: int | None = None) -> dict[str, Any]:
        """The presence content as clients see it (GET /presence and sync)."""
        now_ms = _now_ms() if now_ms is None else now_ms
        content: dict[str, Any] = {
            "presence": row.state,
            "last_active_ago": max(now_ms - row.last_active_ts, 0),
        }
        if row.status_msg is not None:
            content["status_msg"] = row.status_msg
        if row.state != "offline":
            content["currently_active"] = row.currently_active and (
                now_ms - row.last_active_ts < ACTIVE_WINDOW_MS
            )
        return content

    async def set_local(
        self, user_id: str, state: str, status_msg: str | None = None, *, keep_msg: bool = False
    ) -> PresenceRow | None:
        """A local user's explicit presence (PUT /presence/.../status): the new row."""
        if self._off:
            return None
        if self.forward_set is not None:
            body = {"user_id": user_id, "set": state, "status_msg": status_msg}
            answer = await self.forward_set({**body, "keep_msg": keep_msg})
            row = row_from_json(answer)
            if row is not None:
                await self.adopt(row)  # read back here at once, before the bus has it
            return row

        def decide(old: PresenceRow | None, now: int) -> PresenceRow:
            msg = old.status_msg if keep_msg and old is not None else status_msg
            return self._local_row(user_id, state, msg, old, now)

        return await self._apply(user_id, decide, edu=True)

    async def adopt(self, row: PresenceRow) -> None:
        """A row the writer answered with: replicated here unless a newer one came."""
        current = self._state.get(row.user_id)
        if current is not None and current.stream_id >= row.stream_id:
            return
        self.replicate(row, list(await self._rooms.get(row.user_id)))

    async def touch(self, user_id: str, state: str) -> None:
        """A sync with `set_presence`: "online" brings an offline user online (an idle,
        unavailable one stays so until they act), "unavailable" marks them idle,
        "offline" changes nothing. No write when nothing changes."""
        if not self._tracked or not self.touch_needed(user_id, state):
            # Nothing to change (nearly every sync): answer without queueing for the lock
            # behind other users' presence writes.
            return
        await self._apply(user_id, functools.partial(self._touched, user_id, state), edu=True)

    def touch_needed(self, user_id: str, state: str) -> bool:
        """Whether a sync with `set_presence=state` would change the user's row as this
        process holds it (a process reporting to the writer asks before telling it)."""
        return (
            self._tracked and state != "offline" and _touch_changes(self._state.get(user_id), state)
        )

    def _touched(
        self, user_id: str, state: str, old: PresenceRow | None, now: int
    ) -> PresenceRow | None:
        if not _touch_changes(old, state):
            return None
        msg = old.status_msg if old is not None else None
        return self._local_row(user_id, state, msg, old, now)

    async def bump_active(self, user_id: str) -> None:
        """A local user acted (e.g. sent a message): they are online and not idle.

        Awaited by the request handler, so the change is visible when it answers. The
        exact time is kept in memory; the row is written only when the state changes or
        the stored last_active is older than REFRESH_MS (no write per message). In a
        worker (`forward_active` set) the main process is told instead, when that would
        change the row it replicated (so at most once a minute while the user stays
        online: the main's idle timer then counts from that report).
        """
        if not self._tracked:
            return
        if self.forward_active is not None:
            self._report_active(user_id)
            return
        self._active_ms[user_id] = _now_ms()
        changed = await self._apply(
            user_id, lambda row, now: self._acted(user_id, row, now), edu=True
        )
        if changed is None:
            self._reschedule(user_id, _now_ms())

    @asynccontextmanager
    async def syncing(self, user_id: str, set_presence: str | None) -> AsyncIterator[None]:
        """Around one /sync: while it runs the user cannot time out to offline; when it
        ends (returned, failed or the client went away) the sync timeout starts.
        In a process not writing presence (`forward_syncing` set) the writer keeps that
        state, told when the user starts and stops syncing here."""
        if set_presence is None or set_presence == "offline" or not self._tracked:
            yield
            return
        reports = self.forward_syncing
        if reports is not None:
            reports.started(user_id, set_presence)
            try:
                yield
            finally:
                reports.ended(user_id)
            return
        await self.sync_started(user_id, set_presence)
        try:
            yield
        finally:
            self.sync_ended(user_id)

    def _report_active(self, user_id: str) -> None:
        """A worker: tell the main of an action that changes the row we replicated,
        once per row (the main's new row takes a moment to come back over the bus), or
        again after REPORT_AGAIN_MS (a report lost while the main restarted)."""
        now = _now_ms()
        row = self._state.get(user_id)
        if self._acted(user_id, row, now) is None:
            return  # online, and active within REFRESH_MS as the main knows
        key = row.stream_id if row is not None else 0
        told = self._reported.get(user_id)
        if told is not None and told[0] == key and now - told[1] < REPORT_AGAIN_MS:
            return
        if len(self._reported) >= MAX_REPORTED:
            self._reported.clear()
        self._reported[user_id] = (key, now)
        assert self.forward_active is not None
        self.forward_active(user_id)

    async def sync_started(self, user_id: str, set_presence: str) -> None:
        self._syncing[user_id] = self._syncing.get(user_id, 0) + 1
        try:
            await self.touch(user_id, set_presence)
        except BaseException:
            self.sync_ended(user_id)
            raise

    def sync_ended(self, user_id: str) -> None:
        left = self._syncing.pop(user_id, 1) - 1
        if left > 0:
            self._syncing[user_id] = left
        now = _now_ms()
        self._last_sync_ms[user_id] = now
        self._reschedule(user_id, now)

    # -- the writer: other processes' syncing users (remote_syncs.py) ------------------

    async def remote_started(self, process: str, users: dict[str, str]) -> None:
        """`process` says these local users are syncing there (their set_presence)."""
        users = {u: s for u, s in users.items() if self._is_local(u)}
        self._remote_syncs.started(process, list(users), _now_ms())
        for user_id, state in users.items():
            await self.touch(user_id, state)

    def remote_stopped(self, process: str, ago_ms: dict[str, int]) -> None:
        """`process` says these users' last sync there ended `ago_ms` ago."""
        now = _now_ms()
        for user_id in self._remote_syncs.stopped(process, list(ago_ms), now):
            self._synced_until(user_id, now - max(0, ago_ms[user_id]), now)

    def remote_snapshot(self, process: str, users: dict[str, str]) -> None:
        """Every user syncing on `process` (sent every few seconds: who syncs there, as
        the writer missed it or forgot it in a restart, is repaired).

        Only who syncs: their set_presence is not applied again. A snapshot also lists
        users whose last sync ended moments ago, and a sync applies its set_presence
        once, when it starts (as on one process): re-applying it would undo a change
        made since (a PUT of "online" after a sync with set_presence=unavailable, put
        back to unavailable by the next heartbeat). A lost `syncing` report needs no
        repair here: the user's next sync sees the row replicated there unchanged and
        tells the writer again (SyncReporter.started)."""
        now = _now_ms()
        local = [u for u in users if self._is_local(u)]
        for user_id in self._remote_syncs.snapshot(process, local, now):
            self._synced_until(user_id, now, now)

    def _synced_until(self, user_id: str, ended_ms: int, now: int) -> None:
        """The user's syncs on some process stopped at `ended_ms` and none runs anywhere:
        their sync timeout counts from then."""
        self._last_sync_ms[user_id] = max(self._last_sync_ms.get(user_id, 0), ended_ms)
        self._reschedule(user_id, now)

    def _is_syncing(self, user_id: str) -> bool:
        return bool(self._syncing.get(user_id)) or user_id in self._remote_syncs

    def replicate(self, row: PresenceRow, rooms: list[str]) -> None:
        """A worker: the main process changed a user's presence (row as it wrote it)."""
        self._state[row.user_id] = row
        self._log.pop(row.user_id, None)
        self._log[row.user_id] = row.stream_id
        self._position = max(self._position, row.stream_id)
        self._notifier.notify("presence", row.stream_id, users=[row.user_id], rooms=rooms)

    def _local_row(
        self, user_id: str, state: str, msg: str | None, old: PresenceRow | None, now: int
    ) -> PresenceRow:
        active = state == "online"
        if active:
            self._active_ms[user_id] = now
        last_active = now if active or old is None else old.last_active_ts
        return PresenceRow(user_id, state, msg, last_active, active, 0)

    async def set_remote(
        self,
        user_id: str,
        state: str,
        status_msg: str | None = None,
        last_active_ago: int | None = None,
        currently_active: bool = False,
    ) -> None:
        """An `m.presence` EDU entry from another server (origin checked by federation)."""
        if state not in STATES or self._off:
            return
        if self.forward_remote is not None:
            await self.forward_remote(
                {
                    "user_id": user_id,
                    "presence": state,
                    "status_msg": status_msg,
                    "last_active_ago": last_active_ago,
                    "currently_active": bool(currently_active),
                }
            )
            return
        last_active = _now_ms() - max(int(last_active_ago or 0), 0)
        await self._write(
            PresenceRow(user_id, state, status_msg, last_active, bool(currently_active), 0)
        )

    async def _write(self, row: PresenceRow) -> None:
        await self._apply(row.user_id, lambda _old, _now: row, edu=False)

    async def _apply(self, user_id: str, decide: Decision, *, edu: bool) -> PresenceRow | None:
        """Decide and persist under the lock (so a timer never overwrites a sync's fresh
        "online" with a stale decision), then announce: stream position, notifier, and
        for local users EDUs and the next timer."""
        async with self._lock:
            now = _now_ms()
            row = decide(self._state.get(user_id), now)
            if row is None:
                return None
            self._position += 1
            row = replace(row, stream_id=self._position)
            self._writes.put(row.user_id, row)
            self._state[row.user_id] = row
            self._log.pop(row.user_id, None)
            self._log[row.user_id] = row.stream_id
        rooms = await self._rooms.get(row.user_id)
        self._notifier.notify("presence", row.stream_id, users=[row.user_id], rooms=rooms)
        if edu:
            self._reschedule(user_id, now)
            await self._send_edu(user_id)
        return row

    # -- timers ---------------------------------------------------------------------

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    def _last_seen(self, user_id: str, row: PresenceRow) -> int:
        """The latest sign of a client: an action or the end of a sync."""
        active = self._active_ms.get(user_id, row.last_active_ts)
        return max(active, self._last_sync_ms.get(user_id, 0))

    def _next_deadline(self, user_id: str) -> int | None:
        row = self._state.get(user_id)
        if row is None or row.state == "offline":
            return None
        deadlines = []
        if row.state == "online":
            deadlines.append(
                self._active_ms.get(user_id, row.last_active_ts) + self.idle_timeout_ms
            )
        if not self._is_syncing(user_id):
            deadlines.append(self._last_seen(user_id, row) + self.sync_timeout_ms)
        return min(deadlines) if deadlines else None

    def _reschedule(self, user_id: str, now: int) -> None:
        if not self._tracked:
            return  # untracked: only the user changes their presence
        deadline = self._next_deadline(user_id)
        if deadline is not None:
            self._timers.schedule(user_id, max(deadline, now))

    def _timed_out(self, user_id: str, row: PresenceRow | None, now: int) -> PresenceRow | None:
        """The row a due timer moves the user to, or None if they are still fine."""
        if row is None or row.state == "offline":
            return None
        gone = not self._is_syncing(user_id)
        if gone and now - self._last_seen(user_id, row) >= self.sync_timeout_ms:
            self._active_ms.pop(user_id, None)
            self._last_sync_ms.pop(user_id, None)
            return replace(row, state="offline", currently_active=False)
        active = self._active_ms.get(user_id, row.last_active_ts)
        if row.state == "online" and now - active >= self.idle_timeout_ms:
            return replace(row, state="unavailable", last_active_ts=active, currently_active=False)
        return None

    def _acted(self, user_id: str, row: PresenceRow | None, now: int) -> PresenceRow | None:
        active = self._active_ms.get(user_id, now)
        if row is not None and row.state == "online" and active - row.last_active_ts < REFRESH_MS:
            return None
        msg = row.status_msg if row is not None else None
        return PresenceRow(user_id, "online", msg, active, True, 0)

    async def tick(self) -> None:
        """One round of timer work: the due deadlines, at most MAX_PER_TICK of them."""
        now = _now_ms()
        for user_id, heard_ms in self._remote_syncs.expire(now):
            # A process fell silent (killed?): its users' clients are gone since then.
            self._synced_until(user_id, heard_ms, now)
        for user_id in self._timers.pop_due(_now_ms(), self.MAX_PER_TICK):
            changed = await self._apply(
                user_id, functools.partial(self._timed_out, user_id), edu=True
            )
            if changed is None:  # not due after all (acted or synced since): look again later
                self._reschedule(user_id, _now_ms())
        if (nxt := self._timers.next_deadline()) is not None and nxt <= _now_ms():
            self._wake.set()  # more work than one tick's budget: continue right away

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.check_interval_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # a bad row must not stop presence timers for everyone
                log.exception("presence timer tick failed")

    def start(self) -> None:
        """Start the single timer task and the row writer (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="presence-timers")
        self._writes.start()

    async def close(self) -> None:
        """Stop the timer task, write pending rows (app shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await self._writes.close()

    async def _write_rows(self, batch: dict[str, PresenceRow]) -> None:
        await self._store.upsert_many(list(batch.values()))

    async def _send_edu(self, user_id: str) -> None:
        row = self._state[user_id]
        content = self.format(row)
        push = {"user_id": user_id, **content}
        push.setdefault("currently_active", False)
        hosts: set[str] = set()
        for room_id in await self._rooms.get(user_id):
            hosts |= await self._rooms.hosts_in_room(room_id)
        await self._outbox.send("m.presence", {"push": [push]}, hosts)

    def changed_since(self, since: int | None, upto: int) -> list[PresenceRow]:
        """Rows changed in (since, upto] (all rows for an initial sync), newest first."""
        out: list[PresenceRow] = []
        if self._off:
            return out
        for user_id in reversed(self._log):
            pos = self._log[user_id]
            if since is not None and pos <= since:
                break
            if pos <= upto:
                out.append(self._state[user_id])
        return out
