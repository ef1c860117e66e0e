"""The action generator: push rules run for every new event, for every local member.

The room service announces each persisted event synchronously (`on_new_event`); the
evaluation needs I/O (members, power levels, rulesets), so it runs in a worker task.
The spec requires the new counts in the same /sync response as the event, and sync can
be woken by the same announcement, so readers call `wait_until(stream_ordering)` first:
it returns once the worker has handled every event at or below that position, so
counts are exact without putting rule evaluation on the send path's latency.

Events are committed before their actions, so a process killed in between, or a batch
failing while the database is unreachable, would leave acknowledged messages that never
notify (no push, no unread count). Each batch therefore records, in its own
transaction, how far this instance has got (`action_progress`): at startup `catch_up`
evaluates the events after that position that have no actions yet, and a batch that
failed for want of the database is evaluated again in the background until it is
recorded; the position written never passes such a batch. Bounds: a catch-up reads at
most the newest CATCH_UP_LIMIT events (its own and other writers'); at most RETRY_LIMIT
events wait for a retry (past that the oldest are left to the next start's catch-up);
pushes are not sent for events older than CATCH_UP_PUSH_MAX_AGE_S (their counts are
still recorded).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.events import Event
from homeserver.graph.power_levels import PowerLevels
from homeserver.rooms.auth_checks import auth_event_ids_wanted
from homeserver.storage import Stores
from homeserver.storage.errors import DatabaseUnavailableError
from homeserver.storage.push import PushAction, PushStore

from .evaluator import DisplayNameNeeded, EvalContext, Memo, evaluate_ruleset
from .remote_actions import RemoteActions
from .rules import notify_and_highlight
from .rules_service import PushRulesService

log = logging.getLogger(__name__)

MAIN_THREAD = "main"
SHUTDOWN_TIMEOUT_S = 10.0
# Events read at startup, at most: the newest of those after the recorded progress. A
# persister of a deployment hears only its own writes, so its progress stands still
# while it idles and others write; the events it can have lost are the last it wrote
# before it stopped, so the newest are the ones to read.
CATCH_UP_LIMIT = 10_000
CATCH_UP_PAGE = 500  # events read at a time
CATCH_UP_PUSH_MAX_AGE_S = 600.0  # older events get counts but no push
RETRY_LIMIT = 10_000  # events of failed batches waiting to be evaluated again
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0
# A batch with nothing to write still records progress when the last record is older
# than this (so a catch-up never re-reads more than this much of such batches).
IDLE_PROGRESS_S = 5.0


def thread_of(event: Event) -> str:
    """'main', or the root of the thread the event belongs to (one hop: m.thread)."""
    rel = event.content.get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.thread":
        root = rel.get("event_id")
        if isinstance(root, str):
            return root
    return MAIN_THREAD


@dataclass
class _RoomAudience:
    """Who in a room may be notified, and what their rules need, for one batch."""

    joined: list[str]
    names: dict[str, str] | None = None  # display names, fetched when a rule needs one


def named(ctx: EvalContext, display_name: str | None) -> EvalContext:
    """`ctx` for one recipient, with their display name (once the room's names have
    been read for an event that needed one, every recipient gets theirs up front)."""
    return EvalContext(
        ctx.member_count, ctx.sender_power_level, ctx.notification_level, display_name, True
    )


class Delivery(Protocol):
    """Where notifying actions go once recorded (homeserver.push.delivery)."""

    def notify(self, rows: Sequence[PushAction], events: dict[str, Event]) -> None: ...

    def badge_update(self, user_id: str) -> None: ...


class ActionGenerator:
    """An `EventListener` that writes push actions and advances senders' read marks.

    Events queue up and one worker handles whatever has queued in a batch: per room one
    read of members (power levels come with each event's auth events), and one write
    transaction for all the batch's actions and read positions. Under a burst of sends
    this keeps push work from competing with the room writer commit by commit.
    """

    def __init__(
        self,
        stores: Stores,
        push_store: PushStore,
        rules: PushRulesService,
        server_name: str,
        delivery: Delivery | None = None,
        instance: str = "main",
        enabled: bool = True,
    ) -> None:
        # push.enabled off: no rule runs, nothing is recorded (no counts, no pushes);
        # batches still finish, so readers waiting for them do not wait.
        self._enabled = enabled
        self._delivery = delivery
        self._instance = instance
        # Events of batches that failed for want of the database, in stream order, and
        # the task evaluating them again; progress recorded stays below the first.
        self._unrecorded: list[tuple[Event, int]] = []
        self._retry: asyncio.Task[None] | None = None
        self._dropped_below: int | None = None  # progress stays below dropped retries
        self._progress_at = 0.0  # monotonic time progress was last recorded
        self._stores = stores
        self._push = push_store
        self._rules = rules
        self._suffix = ":" + server_name
        self._queue: list[tuple[Event, int]] = []
        self._worker: asyncio.Task[None] | None = None
        # Highest stream ordering queued, and the highest whose batch has finished.
        self._queued_upto = 0
        self._done_upto = 0
        self._progress = asyncio.Condition()
        # A worker deployment (homeserver.replication.build): told of each finished
        # batch (its events' positions; how many notifying or highlighting rows it
        # recorded), so other processes' /sync counts wait for and include them.
        # `late` (the third argument): the batch was a retry or a catch-up, recorded
        # after later events' actions.
        self.on_recorded: Callable[[list[int], int, bool], None] | None = None
        # A process that replays events other processes wrote waits for their actions
        # there too (push/remote_actions.py).
        self.remote: RemoteActions | None = None

    # -- listener -------------------------------------------------------------------------

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if stream_ordering <= 0:
            return  # history (backfill) never notifies
        self._queue.append((event, stream_ordering))
        self._queued_upto = max(self._queued_upto, stream_ordering)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def wait_until(self, stream_ordering: int) -> None:
        """Return once every event at or below `stream_ordering` has its actions."""
        if self.remote is not None:
            await self.remote.wait_until(stream_ordering)
        target = min(stream_ordering, self._queued_upto)
        if self._done_upto >= target:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._done_upto >= target or self._worker is None)

    async def close(self) -> None:
        """Finish in-flight work (bounded) on shutdown; retries wait for the next start."""
        if self._retry is not None:
            self._retry.cancel()
        if self._worker is not None and not self._worker.done():
            await asyncio.wait([self._worker], timeout=SHUTDOWN_TIMEOUT_S)

    async def catch_up(self) -> int:
        """Evaluate the events after this instance's recorded progress that have no
        actions (the process stopped, or the database failed, between an event's commit
        and its actions'); how many. Only the events this process persisted
        (events.instance_name), in any room (it writes in rooms routed to others too: a
        room creation, a profile change): no other process evaluates those, so none can
        be recording and pushing them meanwhile (reading everyone's events raced their
        live batches, and both pushed). Never at or below the retention's fold position
        (summaries count those). Called before the process serves, so no reader counts
        without them. A first start only records the current position."""
        if not self._enabled:
            return 0
        events = self._stores.events
        newest = await events.get_current_stream_position()
        since = await self._push.action_progress(self._instance)
        if since is None:
            await self._push.record_batch([], [], (self._instance, newest))
            return 0
        since = max(since, await self._push.fold_position())
        if since < newest - CATCH_UP_LIMIT:  # positions are dense: MAX + 1 each
            log.info(
                "push rules catch-up skips events %d to %d", since + 1, newest - CATCH_UP_LIMIT
            )
            since = newest - CATCH_UP_LIMIT
        evaluated = found = 0
        while since < newest:
            page = await events.read_stream(since, newest, CATCH_UP_PAGE, self._instance)
            if not page:
                break
            since = page[-1][1]
            wanted = [(e, so) for e, so, outlier in page if not outlier]
            done = await self._push.positions_with_actions([so for _, so in wanted])
            batch = [(e, so) for e, so in wanted if so not in done]
            if batch:
                counted = await self._generate_batch(batch, retried=True)
                evaluated, found = evaluated + len(batch), found + counted
        if found:  # events that notify nobody have no rows: evaluated again, harmlessly
            log.info("%d notifications of %d events written before a restart", found, evaluated)
        return evaluated

    # -- the work -------------------------------------------------------------------------

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(self._suffix)

    async def _work(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                failed = True
                try:
                    await self._generate_batch(batch)  # announced there
                    failed = False
                except DatabaseUnavailableError as exc:
                    log.warning(
                        "push actions of %d events wait for the database: %s", len(batch), exc
                    )
                    self._retry_later(batch)
                except Exception:
                    log.exception("push action generation failed for %d events", len(batch))
                if failed and self.on_recorded is not None:
                    # How many count is unknown: readers then look for themselves.
                    self.on_recorded([so for _, so in batch], 1, False)
                async with self._progress:
                    self._done_upto = max(self._done_upto, max(so for _, so in batch))
                    self._progress.notify_all()
        finally:
            self._worker = None
            async with self._progress:
                self._progress.notify_all()

    def _retry_later(self, batch: list[tuple[Event, int]]) -> None:
        self._unrecorded = sorted([*self._unrecorded, *batch], key=lambda item: item[1])
        if len(self._unrecorded) > RETRY_LIMIT:  # the oldest wait for the next start
            drop = len(self._unrecorded) - RETRY_LIMIT
            log.warning("push actions of %d events left to the next start", drop)
            first = self._unrecorded[0][1]
            self._dropped_below = min(self._dropped_below or first, first)
            del self._unrecorded[:drop]
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._retry_unrecorded())

    async def _retry_unrecorded(self) -> None:
        """Evaluate failed batches again (backoff RETRY_MIN_S doubling to RETRY_MAX_S)
        until they are recorded; their rooms' cached counts are recomputed."""
        delay = RETRY_MIN_S
        while self._unrecorded:
            await asyncio.sleep(delay)
            batch = self._unrecorded[:CATCH_UP_PAGE]
            try:
                await self._generate_batch(batch, retried=True)  # announced there
            except DatabaseUnavailableError:
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception:
                log.exception("push action generation failed for %d events", len(batch))
                if self.on_recorded is not None:  # unknown: readers look for themselves
                    self.on_recorded([so for _, so in batch], 1, True)
            delay = RETRY_MIN_S
            del self._unrecorded[: len(batch)]

    def _progress_to_record(
        self, batch: list[tuple[Event, int]], wrote: bool
    ) -> tuple[str, int] | None:
        """What to record as this instance's progress with the batch: its last position,
        held below the first event still waiting for a retry; None when the batch writes
        nothing and progress was recorded under IDLE_PROGRESS_S ago."""
        now = time.monotonic()
        if not wrote and now - self._progress_at < IDLE_PROGRESS_S:
            return None
        self._progress_at = now
        upto = max(so for _, so in batch)
        for held in (self._unrecorded[0][1] if self._unrecorded else None, self._dropped_below):
            if held is not None:
                upto = min(upto, held - 1)
        return self._instance, upto

    async def _generate_batch(self, batch: list[tuple[Event, int]], retried: bool = False) -> int:
        """Record the batch's actions, announce them, then push: how many of them notify
        or highlight. `retried`: a failed batch or a catch-up, recorded after later
        events may have been counted. The announcement goes first: a pusher in another
        process folds it into the unread counts the push's badge is read from (pushed
        first, a badge could miss the very message it announces)."""
        counted, pushed = await self._record_batch(batch, retried)
        if self.on_recorded is not None:
            self.on_recorded([so for _, so in batch], counted, retried)
        if self._delivery is not None and pushed:
            self._delivery.notify(pushed, {event.event_id: event for event, _ in batch})
        return counted

    async def _record_batch(
        self, batch: list[tuple[Event, int]], retried: bool
    ) -> tuple[int, list[PushAction]]:
        """The batch's actions recorded: how many notify or highlight, and the rows to
        push."""
        if not self._enabled:
            return 0, []
        rows: list[PushAction] = []
        read_positions: dict[tuple[str, str, str], int] = {}
        rooms: dict[str, _RoomAudience] = {}
        powers: dict[tuple[str, ...], PowerLevels] = {}
        for event, stream_ordering in batch:
            room_id = event.room_id
            thread_id = thread_of(event)
            if self._is_local(event.sender):
                # Sending an event updates the sender's read receipt (push module).
                key = (event.sender, room_id, thread_id)
                read_positions[key] = max(read_positions.get(key, 0), stream_ordering)
            if event.type == "m.room.member" or room_id not in rooms:
                # Membership changes the audience: re-read it for the events after.
                joined = await self._stores.current_state.get_users_in_room(room_id)
                rooms[room_id] = _RoomAudience(joined)
            power = await self._power_at(event, powers)
            rows.extend(
                await self._actions_for(event, stream_ordering, thread_id, rooms[room_id], power)
            )
        positions = [(u, r, t, so) for (u, r, t), so in read_positions.items()]
        progress = self._progress_to_record(batch, bool(rows or positions))
        # Late: only the rows inserted here count and notify (another process may have
        # recorded the same events meanwhile: they are pushed once).
        rows = list(await self._push.record_batch(rows, positions, progress, late=retried))
        pushed = rows
        if retried:  # counts cached since then were computed without these rows
            for user_id, room_id in {(r.user_id, r.room_id) for r in rows}:
                self._push.read_marker_moved(user_id, room_id)
            oldest = (time.time() - CATCH_UP_PUSH_MAX_AGE_S) * 1000
            pushed = [r for r in rows if r.ts >= oldest]
        notifying = pushed if any(r.notif for r in pushed) else []
        return sum(1 for r in rows if r.notif or r.highlight), notifying

    async def _actions_for(
        self,
        event: Event,
        stream_ordering: int,
        thread_id: str,
        audience: _RoomAudience,
        power: PowerLevels,
    ) -> list[PushAction]:
        room_id = event.room_id
        joined = audience.joined
        targets = [u for u in joined if self._is_local(u) and u != event.sender]
        invitee = event.state_key if event.type == "m.room.member" else None
        if (
            invitee
            and event.membership == "invite"
            and self._is_local(invitee)
            and invitee not in targets
            and invitee != event.sender
        ):
            targets.append(invitee)
        if not targets:
            return []
        pdu: dict[str, Any] = dict(event.pdu)
        pdu.setdefault("room_id", room_id)
        pdu["event_id"] = event.event_id
        # One context for every recipient; the display name is looked up only for a
        # recipient whose rules get as far as a contains_display_name condition.
        shared_ctx = EvalContext(
            member_count=len(joined),
            sender_power_level=power.user_level(event.sender),
            notification_level=power.notification_level,
            display_name_known=False,
        )
        rows: list[PushAction] = []
        memo: Memo = {}
        for user_id in targets:
            ruleset = await self._rules.get_ruleset(user_id)
            names = audience.names
            try:
                ctx = shared_ctx if names is None else named(shared_ctx, names.get(user_id))
                rule = evaluate_ruleset(ruleset, pdu, ctx, memo)
            except DisplayNameNeeded:
                names = audience.names = await self._display_names(room_id)
                rule = evaluate_ruleset(ruleset, pdu, named(shared_ctx, names.get(user_id)), memo)
            if rule is None:
                continue
            notif, highlight = notify_and_highlight(rule.actions)
            if not notif and not highlight:
                continue
            rows.append(
                PushAction(
                    user_id=user_id,
                    event_id=event.event_id,
                    room_id=room_id,
                    stream_ordering=stream_ordering,
                    thread_id=thread_id,
                    actions=list(rule.actions),
                    notif=notif,
                    highlight=highlight,
                    ts=event.origin_server_ts,
                )
            )
        return rows

    async def _power_at(
        self, event: Event, seen: dict[tuple[str, ...], PowerLevels]
    ) -> PowerLevels:
        """The power levels the event was authorised with: from its auth events (as
        Synapse does), so a change later in the room does not apply to it, and nothing
        of the room's state is read (its auth events are in the event cache; `seen`
        keeps the batch's events that share them from building it again)."""
        ids = tuple(auth_event_ids_wanted(event))
        power = seen.get(ids)
        if power is None:
            pl = create = None
            for auth in (await self._stores.events.get_events(ids)).values():
                if auth.state_key == "" and auth.type == "m.room.power_levels":
                    pl = auth
                elif auth.state_key == "" and auth.type == "m.room.create":
                    create = auth
            power = seen[ids] = PowerLevels(pl, create)
        return power

    async def _display_names(self, room_id: str) -> dict[str, str]:
        """Every member's display name in the room, for the contains_display_name rule
        (one state read per room and batch, not two reads per recipient per event)."""
        ids = await self._stores.current_state.get_current_state_ids(room_id, ("m.room.member",))
        events = await self._stores.events.get_events(ids.values())
        names: dict[str, str] = {}
        for (_, user_id), event_id in ids.items():
            event = events.get(event_id)
            name = event.content.get("displayname") if event is not None else None
            if isinstance(name, str):
                names[user_id] = name
        return names

    # -- read positions -------------------------------------------------------------------

    async def mark_read(
        self, user_id: str, room_id: str, event_id: str, thread_id: str | None = None
    ) -> bool:
        """Apply an m.read / m.read.private receipt: notifications up to and including
        `event_id` are read (in `thread_id` only, for a threaded receipt). False when
        the event is unknown."""
        stream = await self._stores.events.get_stream_ordering(event_id)
        if stream is None:
            return False
        await self._push.advance_read_position(user_id, room_id, stream, thread_id or "")
        return True
