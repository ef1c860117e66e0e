"""Delayed events (MSC4140): a user schedules an event now; we send it later as them.

What it is for: MatrixRTC calls (Element Call in Element Web and Element X). A client
joining a call schedules its own "left the call" state event with a short delay and
restarts the timer every few seconds while it is connected; if it crashes or loses
the network, the timer runs out and we send the leave for it, so the room does not
show a call member who is gone. The restart needs no access token: the `delay_id` is
the capability (an SFU's token service restarts it on the user's behalf), so IDs are
unguessable (DELAY_ID_BYTES random bytes).

How it holds up:
- Rows live in PostgreSQL/SQLite (storage/delayed_events.py), so a restart loses no
  schedule: the timer loop reads the earliest send time from the table and sends what
  is due after a stop as soon as it is back.
- One process runs the timer: the main (`runs_timer`). With workers every delayed-event
  request is routed to the main (replication/forward.py: a send with the delay
  parameter has no room shard), so the main's in-memory state (`_state_targets`,
  the wake-up) sees every change.
- Sending goes through RoomSender as the owner, with the owner's checks (joined, power
  levels, suspension). A message uses the transaction ID "delayed.<delay_id>", so a
  send repeated after a crash between the send and the row's update answers the first
  event instead of a second one; a state event repeated with the same content is a
  no-op there too. Of the timer and the owner's send, cancel or restart racing for one
  event, exactly one acts at a time (`_claimed`), and the row's conditional update
  decides what a late one finds.
- A failed send (the owner left the room, lost the power level) finalises the row with
  the Matrix error, visible in GET /delayed_events, as does any other failure but a
  database outage, which leaves it scheduled for the loop to try again after RETRY_S
  (a failure that would come back every time must not be retried forever).
- Someone else setting the same piece of state drops the scheduled state events of
  it that they do not own (their newer decision must not be overwritten by an old
  timer), as Synapse does.

Bounds: MAX_SCHEDULED_PER_USER rows scheduled per user (storage bounds the finalised
ones), MAX_PENDING_DROPS state checks at once; the longest delay is
`max_event_delay_duration`; the loop sends DUE_BATCH per database read; scheduling
costs the sender's message rate limit, managing one costs `rc_delayed_event_mgmt`
(keyed by the event's owner, or by IP for unknown IDs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from homeserver.background import cancel_and_wait
from homeserver.errors import MatrixError, invalid_param, not_found
from homeserver.events import Event
from homeserver.rooms.sending import RoomSender
from homeserver.storage import TransactionStore
from homeserver.storage.delayed_events import (
    DelayedEvent,
    DelayedEventStore,
    TooManyScheduled,
)
from homeserver.storage.errors import DatabaseUnavailableError, StorageError

log = logging.getLogger(__name__)

DELAY_ID_BYTES = 24
MAX_SCHEDULED_PER_USER = 100
DUE_BATCH = 100
# The loop re-reads the earliest send time at least this often (a safety net: every
# change made here wakes it at once).
IDLE_CHECK_S = 30.0
RETRY_S = 5.0  # after a database failure
MIN_WAIT_S = 0.01
# State events being checked against scheduled state at once (a burst of state events
# from another server in rooms with scheduled state): past this, a check is skipped.
MAX_PENDING_DROPS = 10_000
PRUNE_EVERY_MS = 3600 * 1000
ACTIONS = ("cancel", "restart", "send")
_MSC = "org.matrix.msc4140"
DELAY_PARAM = _MSC + ".delay"  # the query parameter that makes a send a delayed one

StateKey = tuple[str, str, str]


def now_ms() -> int:
    return int(time.time() * 1000)


def max_delay_exceeded(max_delay_ms: int) -> MatrixError:
    """What Synapse answers (the MSC's code inside its unstable field; clients read both)."""
    return MatrixError(
        400,
        "M_UNKNOWN",
        f"The requested delay exceeds the allowed maximum ({max_delay_ms} ms)",
        **{f"{_MSC}.errcode": "M_MAX_DELAY_EXCEEDED", f"{_MSC}.max_delay": max_delay_ms},
    )


def describe(event: DelayedEvent) -> dict[str, Any]:
    """A scheduled event as GET /delayed_events lists it."""
    since = event.send_ts - event.delay_ms
    body: dict[str, Any] = {
        "delay_id": event.delay_id,
        "room_id": event.room_id,
        "type": event.event_type,
        "delay": event.delay_ms,
        "running_since": since,
        # The names Synapse 1.163 adds beside the first two (a later MSC revision's).
        "delay_ms": event.delay_ms,
        "delayed_since_ts": since,
        "content": event.content,
    }
    if event.state_key is not None:
        body["state_key"] = event.state_key
    return body


def describe_finalised(event: DelayedEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "delayed_event": describe(event),
        "outcome": event.outcome,
        "reason": event.reason,
        "origin_server_ts": event.finalised_ts,
    }
    if event.event_id is not None:
        body["event_id"] = event.event_id
    if event.error is not None:
        body["error"] = event.error
    return body


class DelayedEvents:
    """Schedules, manages and sends delayed events; an EventListener (rooms.ports) for
    the state changes that drop other users' scheduled state."""

    def __init__(
        self,
        store: DelayedEventStore,
        max_delay_ms: int | None,
        runs_timer: bool,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self.max_delay_ms = max_delay_ms  # None: delayed events are switched off
        self._runs_timer = runs_timer
        self._clock = clock
        self._sender: RoomSender | None = None
        self._txns: TransactionStore | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy: set[str] = set()  # delay IDs being changed (see _claimed)
        # How many scheduled state events target each (room, type, state key): a state
        # event anyone sends is checked against this in memory, not the database.
        self._state_targets: Counter[StateKey] = Counter()
        self._dropping: set[asyncio.Task[None]] = set()

    async def start(self, sender: RoomSender, txns: TransactionStore) -> None:
        """Send with `sender` (RoomSender, built after the persister this listens to),
        checking `txns` (the client transactions' record) first; the main also loads
        what is scheduled and runs the timer."""
        self._sender = sender
        self._txns = txns
        if not self._runs_timer:
            return
        self._state_targets = Counter(await self._store.scheduled_state())
        self._task = asyncio.create_task(self._loop(), name="delayed events")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        for task in list(self._dropping):
            await cancel_and_wait(task)

    # -- what users ask ------------------------------------------------------------------

    async def schedule(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        event_type: str,
        state_key: str | None,
        content: dict[str, Any],
        delay_ms: int,
        txn_id: str | None = None,
    ) -> str:
        """Schedule an event; a repeated `txn_id` (a message's client transaction)
        answers the delay_id it got the first time."""
        if self.max_delay_ms is None:
            raise MatrixError(403, "M_FORBIDDEN", "Delayed events are switched off here")
        if delay_ms > self.max_delay_ms:
            raise max_delay_exceeded(self.max_delay_ms)
        event = DelayedEvent(
            delay_id="dly_" + secrets.token_urlsafe(DELAY_ID_BYTES),
            user_id=user_id,
            device_id=device_id,
            room_id=room_id,
            event_type=event_type,
            state_key=state_key,
            content=content,
            delay_ms=delay_ms,
            send_ts=self._clock() + delay_ms,
        )
        txn_key = None if txn_id is None else f"{device_id or ''}/{txn_id}"
        try:
            delay_id = await self._store.add(event, MAX_SCHEDULED_PER_USER, txn_key)
        except TooManyScheduled:
            raise MatrixError(
                400,
                "M_UNKNOWN",
                f"At most {MAX_SCHEDULED_PER_USER} delayed events may be scheduled at once",
                **{f"{_MSC}.errcode": "M_MAX_DELAYED_EVENTS_EXCEEDED"},
            ) from None
        if delay_id != event.delay_id:
            return delay_id  # the transaction's first request scheduled it
        if state_key is not None:
            self._state_targets[(room_id, event_type, state_key)] += 1
        self._wake.set()
        return delay_id

    async def act(
        self, delay_id: str, action: str, admit: Callable[[str | None], None] = lambda _: None
    ) -> None:
        """cancel / restart / send the scheduled event `delay_id`: 404 if there is none
        (never was, already sent or cancelled). Whoever holds the delay_id may: the
        requester's identity plays no part (Synapse 1.163 acts for another user's token
        too; leaving the token out would do the same). `admit(owner)` runs first, with
        the owner (None for an unknown ID): the rate limit, from the same read."""
        if action not in ACTIONS:
            raise invalid_param(f"'action' must be one of {', '.join(ACTIONS)}")
        event = await self._store.get(delay_id)
        scheduled = event is not None and event.scheduled
        admit(event.user_id if event is not None and scheduled else None)
        if event is None or not scheduled:
            raise not_found("No such scheduled delayed event")
        if action == "send":
            done = await self._send(event, "action")
        else:
            done = await self._claimed(delay_id, self._restart_or_cancel(event, action))
        if not done:
            raise not_found("No such scheduled delayed event")

    async def _restart_or_cancel(self, event: DelayedEvent, action: str) -> bool:
        if action == "cancel":
            return await self._finalise(event, "cancel", "action")
        if not await self._store.restart(event.delay_id, self._clock()):
            return False
        self._wake.set()
        return True

    async def _claimed(self, delay_id: str, work: Coroutine[Any, Any, bool]) -> bool:
        """Run `work` unless another change of `delay_id` is under way here (then
        False): the timer's send, the owner's send, cancel and restart exclude each
        other, so a cancel answered 200 never sees its event sent anyway. (Every change
        happens on this process: with workers, all of them are routed to the main.)"""
        if delay_id in self._busy:
            work.close()
            return False
        self._busy.add(delay_id)
        try:
            return await work
        finally:
            self._busy.discard(delay_id)

    async def one_of_user(self, user_id: str, delay_id: str) -> dict[str, Any]:
        """One scheduled event of `user_id`, with the field names of the MSC's latest
        revision only, as Synapse 1.163 answers GET /delayed_events/{delay_id}."""
        event = await self._store.get(delay_id)
        if event is None or not event.scheduled or event.user_id != user_id:
            raise not_found("No such scheduled delayed event")
        body = describe(event)
        del body["delay"], body["running_since"]
        return body

    async def of_user(self, user_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(scheduled, finalised) delayed events of `user_id`, as clients are shown them."""
        events = await self._store.of_user(user_id, self._clock())
        scheduled = [describe(e) for e in events if e.scheduled]
        finalised = [describe_finalised(e) for e in events if not e.scheduled]
        return scheduled, finalised

    # -- what happens in rooms -------------------------------------------------------------

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if event.state_key is None or not self._state_targets:
            return
        key = (event.room_id, event.type, event.state_key)
        if self._state_targets.get(key):
            if len(self._dropping) >= MAX_PENDING_DROPS:
                log.warning(
                    "delayed events: %s dropping state, skipping %s", MAX_PENDING_DROPS, key
                )
                return
            task = asyncio.create_task(self._drop_state_of_others(key, event.sender))
            self._dropping.add(task)
            task.add_done_callback(self._dropping.discard)

    async def _drop_state_of_others(self, key: StateKey, sender: str) -> None:
        try:
            dropped = await self._store.drop_state_of_others(*key, sender)
        except StorageError:
            log.warning("delayed events: could not drop scheduled %s of others", key)
            return
        if dropped:
            self._forget_state(key, dropped)
            self._wake.set()

    def _forget_state(self, key: StateKey, count: int = 1) -> None:
        left = self._state_targets[key] - count
        if left > 0:
            self._state_targets[key] = left
        else:
            self._state_targets.pop(key, None)

    # -- sending ---------------------------------------------------------------------------

    async def _finalise(self, event: DelayedEvent, outcome: str, reason: str, **kw: Any) -> bool:
        won = await self._store.finalise(event, outcome, reason, self._clock(), **kw)
        if won and event.state_key is not None:
            self._forget_state((event.room_id, event.event_type, event.state_key))
        return won

    async def _send(self, event: DelayedEvent, reason: str) -> bool:
        """Send `event` as its owner and finalise it; False if another change has it or
        it is no longer scheduled. A database failure propagates, leaving the row
        scheduled for the next try."""
        return await self._claimed(event.delay_id, self._send_claimed(event.delay_id, reason))

    async def _send_claimed(self, delay_id: str, reason: str) -> bool:
        current = await self._store.get(delay_id)
        if current is None or not current.scheduled:
            return False
        try:
            event_id = await self._send_as_owner(current)
        except MatrixError as exc:
            log.info("delayed event %s not sent: %s", delay_id, exc.message)
            await self._finalise(current, "send", "error", error=exc.to_json())
            if reason == "action":
                raise  # the owner asked to send it now: they are told why it was not
            return True
        except DatabaseUnavailableError:
            raise  # passing: the loop tries again (any other failure would come back)
        except Exception:
            log.exception("delayed event %s could not be sent", delay_id)
            error = {"errcode": "M_UNKNOWN", "error": "Internal error"}
            await self._finalise(current, "send", "error", error=error)
            return True
        await self._finalise(current, "send", reason, event_id=event_id)
        return True

    async def _send_as_owner(self, event: DelayedEvent) -> str:
        if self._sender is None:
            raise MatrixError(503, "M_UNKNOWN", "Not ready to send events")
        if event.state_key is not None:
            return await self._sender.set_state(
                event.room_id, event.user_id, event.event_type, event.state_key, event.content
            )
        txn = (event.user_id, event.device_id, "delayed." + event.delay_id)
        sent = None if self._txns is None else await self._txns.get_client_txn(*txn)
        if sent is not None:
            return sent  # sent before a crash, not recorded here: not a second time
        return await self._sender.send_message(
            event.room_id, event.user_id, event.event_type, event.content, txn
        )

    async def _loop(self) -> None:
        last_prune = 0
        while True:
            self._wake.clear()
            try:
                now = self._clock()
                if now - last_prune >= PRUNE_EVERY_MS:
                    await self._store.prune(now)
                    last_prune = now
                due = await self._store.due(now, DUE_BATCH)
                for event in due:
                    await self._send(event, "delay")
                if len(due) == DUE_BATCH:
                    continue
                next_ts = await self._store.next_send_ts()
            except StorageError as exc:
                log.warning("delayed events: %s; trying again in %.0f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            except Exception:  # a bug must not stop every later delayed event
                log.exception("delayed events: trying again in %.0f s", RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            wait_s = IDLE_CHECK_S
            if next_ts is not None:  # at least MIN_WAIT_S: one being sent may still be due
                wait_s = min(wait_s, max(MIN_WAIT_S, (next_ts - self._clock()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)
