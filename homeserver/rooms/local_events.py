"""Build, authorise and persist events that our own users send.

Every local event goes through `LocalEvents.send`: it takes the room's lock, builds the
event on top of the current forward extremities, checks the auth rules against the
state before it, persists, and only then returns, so a 200 to the client means durable.

Messages (non-state events) to one room are queued and persisted by one drainer task per
room as a chain in one transaction: a burst of N sends costs one commit and one state
lookup, not N, while each request still returns only after its event is durable. The
chains of different rooms that are ready while another commits share one transaction
(EventStore's group commit), so a thousand quiet rooms cost about what one busy room
costs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import Event, RoomVersion, get_room_version
from homeserver.events.builder import build_event, edge_hash
from homeserver.events.hashing import compute_reference_hash, unpadded_b64
from homeserver.events.policy import POLICY_TYPE
from homeserver.events.retention import RETENTION_TYPE, check_retention_event
from homeserver.events.validation import EventFormatError
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.storage import Stores

from .auth_checks import CREATE_KEY, check_with_auth_state
from .keyed_lock import KeyedLock
from .persister import Persister
from .policy_server import PolicyServers
from .room_state import RoomState

MAX_PREV_EVENTS = 10
MAX_BATCH = 100
MAX_CREATE_ATTEMPTS = 50
MAX_RECENT_TXNS = 10_000
MAX_DEPTH = 2**63 - 1


@dataclass
class _Queued:
    sender: str
    event_type: str
    content: dict[str, Any]
    txn: tuple[str, str | None, str] | None
    future: asyncio.Future[Event]
    ts: int | None = None  # an appservice's `?ts=` (timestamp massaging)


@dataclass
class _BuildBase:
    """The tip of a room's graph that the next local event is built on."""

    prev_ids: list[str]
    depth: int
    state_before: dict
    group: int | None
    pending: dict[str, Event] = field(default_factory=dict)

    def advance(self, event: Event) -> None:
        """The next event of a chain goes on `event` (a non-state event: same state)."""
        self.prev_ids = [event.event_id]
        self.depth = min(self.depth + 1, MAX_DEPTH)
        self.pending[event.event_id] = event


class LocalEvents:
    def __init__(
        self,
        stores: Stores,
        room_state: RoomState,
        persister: Persister,
        locks: KeyedLock,
        server_name: str,
        signing_key: Any,
        clock: Callable[[], float] = time.time,
        policy: PolicyServers | None = None,
    ) -> None:
        self._stores = stores
        # The rooms' Policy Servers (v1.18): asked before an event is sent anywhere.
        self._policy = policy
        self._room_state = room_state
        self._persister = persister
        self.locks = locks
        self._server_name = server_name
        self._signing_key = signing_key
        self._clock = clock
        # (user, device, txn_id) -> event ID of recent sends, oldest first.
        self._recent_txns: dict[tuple[str, str | None, str], str] = {}
        # Per room: messages waiting to be persisted, and the task persisting them.
        self._queues: dict[str, list[_Queued]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        """At shutdown: wait for queued messages to be persisted (each room's drainer
        ends once its queue is empty; no new sends arrive once the server stopped)."""
        drainers = list(self._drainers.values())
        if drainers:
            await asyncio.gather(*drainers, return_exceptions=True)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def new_room_id(self) -> str:
        """A fresh `!opaque:server` room ID for room versions 1–11."""
        return f"!{secrets.token_urlsafe(18)}:{self._server_name}"

    async def room_version(self, room_id: str) -> RoomVersion:
        version = await self._stores.rooms.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        return get_room_version(version)

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        redacts: str | None = None,
        txn: tuple[str, str | None, str] | None = None,
        ts: int | None = None,
    ) -> Event:
        """Send an event as `sender`; with `txn` (user, device, txn_id) it is idempotent.
        `ts`: the event's origin_server_ts (appservices' timestamp massaging)."""
        if event_type == RETENTION_TYPE:
            check_retention_event(content, state_key)  # 400 for what Synapse refuses
        version = await self.room_version(room_id)
        if txn is not None:
            existing = await self._existing_txn(txn)
            if existing is not None:
                return existing
        if state_key is None and redacts is None:
            return await self._send_batched(version, room_id, sender, event_type, content, txn, ts)
        async with self.locks.hold(room_id):
            # A concurrent request with the same txn may have won while we waited; the
            # in-memory record answers without another database trip under the lock.
            if txn is not None and txn in self._recent_txns:
                existing = await self._stores.events.get_event(self._recent_txns[txn])
                if existing is not None:
                    return existing
            event, state_before, group = await self._build_checked(
                version, room_id, sender, event_type, content, state_key, redacts, ts
            )
            await self._persister.persist(
                event,
                state_before=state_before,
                state_before_group=group,
                announce_to_peers=True,
                client_txn=txn,
            )
            if txn is not None:
                self._remember_txn(txn, event.event_id)
        return event

    async def _existing_txn(self, txn: tuple[str, str | None, str]) -> Event | None:
        """The event a transaction already made here. Only this process's memory: the
        callers read the database's record first (the client API's `_once_per_txn`, a
        read every send would otherwise pay twice); what this catches is a duplicate
        that committed since, and the batch catches one still queued."""
        event_id = self._recent_txns.get(txn)
        return None if event_id is None else await self._stores.events.get_event(event_id)

    def _remember_txn(self, txn: tuple[str, str | None, str], event_id: str) -> None:
        self._recent_txns[txn] = event_id
        if len(self._recent_txns) > MAX_RECENT_TXNS:
            self._recent_txns.pop(next(iter(self._recent_txns)))

    async def build_only(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
    ) -> Event:
        """Build and authorise an event without persisting it (e.g. a remote invite,
        which the invitee's server must counter-sign first)."""
        version = await self.room_version(room_id)
        async with self.locks.hold(room_id):
            event, _, _ = await self._build_checked(
                version, room_id, sender, event_type, content, state_key, None
            )
        return event

    async def build_template(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
    ) -> dict[str, Any]:
        """An unsigned event template for a remote user (make_join/leave/knock): built
        on our current extremities and auth-checked against our state (403 if not
        allowed); without hashes and signatures, which the remote server adds."""
        event = await self.build_only(room_id, sender, event_type, content, state_key)
        pdu = {k: v for k, v in event.pdu.items() if k not in ("hashes", "signatures")}
        pdu["origin"] = sender.partition(":")[2]
        return pdu

    def build_out_of_band_leave(self, prior: Event) -> Event:
        """Our user's leave built on their out-of-band invite or knock alone.

        Used when no resident server will sign a rejection (unreachable, or it refuses):
        the invitee still gets out of the room on our side. The event cites only the
        prior membership (as Synapse's local fallback does); it is never sent to peers.
        """
        version = prior.room_version
        return _build_event(
            version,
            room_id=prior.room_id,
            sender=prior.state_key,
            type="m.room.member",
            content={"membership": "leave"},
            state_key=prior.state_key,
            prev_event_ids=[prior.event_id],
            auth_event_ids=[prior.event_id],
            depth=prior.depth + 1,
            origin_server_ts=self.now_ms(),
            server_name=self._server_name,
            signing_key=self._signing_key,
            edge_hashes={prior.event_id: edge_hash(prior)} if version.event_id_in_event else None,
        )

    async def persist_built(self, event: Event) -> Event:
        """Persist an event from `build_only` (possibly counter-signed since)."""
        async with self.locks.hold(event.room_id):
            state_before, group = await self._room_state.state_after_events(
                event.room_version, event.prev_event_ids
            )
            await self._persister.persist(
                event, state_before=state_before, state_before_group=group, announce_to_peers=True
            )
        return event

    async def _prepare(self, version: RoomVersion, room_id: str) -> _BuildBase:
        """Where the next event of the room goes: its prev_events, depth and the state."""
        prev_ids = (await self._stores.events.get_forward_extremities(room_id))[-MAX_PREV_EVENTS:]
        if not prev_ids:
            raise not_found("Room has no events we can build on")
        state_before, group = await self._room_state.state_after_events(version, prev_ids)
        prev_events = await self._stores.events.get_events(prev_ids)
        depth = min(max((e.depth for e in prev_events.values()), default=0) + 1, MAX_DEPTH)
        return _BuildBase(prev_ids, depth, state_before, group)

    async def _build_on(
        self,
        version: RoomVersion,
        base: _BuildBase,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
        auth_cache: dict[frozenset, tuple[list[str], dict]] | None = None,
        ts: int | None = None,
    ) -> Event:
        """Build, sign and authorise one event on `base` (raises 403/400/413)."""
        state_before = base.state_before
        auth_keys = auth_types_for_event(version, event_type, sender, state_key, content)
        cache_key = frozenset(auth_keys)
        cached = auth_cache.get(cache_key) if auth_cache is not None else None
        if cached is None:
            auth_ids = [state_before[k] for k in sorted(auth_keys) if k in state_before]
            auth_state = await self._room_state.auth_state_for(
                state_before, auth_keys | {CREATE_KEY}
            )
            if auth_cache is not None:
                auth_cache[cache_key] = (auth_ids, auth_state)
        else:
            auth_ids, auth_state = cached
        edge_hashes = None
        if version.event_id_in_event:
            related = dict(await self._stores.events.get_events([*base.prev_ids, *auth_ids]))
            related.update(base.pending)
            edge_hashes = {
                eid: unpadded_b64(compute_reference_hash(ev.pdu, version))
                for eid, ev in related.items()
            }
        event = _build_event(
            version,
            room_id=room_id,
            sender=sender,
            type=event_type,
            content=content,
            state_key=state_key,
            prev_event_ids=base.prev_ids,
            auth_event_ids=auth_ids,
            depth=base.depth,
            origin_server_ts=self.now_ms() if ts is None else ts,
            redacts=redacts,
            server_name=self._server_name,
            signing_key=self._signing_key,
            edge_hashes=edge_hashes,
        )  # format-checked by build_event (a failure: _build_event's 413/400)
        refusal = check_with_auth_state(event, auth_state)
        if refusal is not None:
            raise forbidden(refusal)
        if self._policy is not None and (POLICY_TYPE, "") in state_before:
            event = await self._policy.cosign(event, state_before)
        return event

    async def _build_checked(
        self,
        version: RoomVersion,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
        ts: int | None = None,
    ) -> tuple[Event, dict, int | None]:
        base = await self._prepare(version, room_id)
        event = await self._build_on(
            version, base, room_id, sender, event_type, content, state_key, redacts, ts=ts
        )
        return event, base.state_before, base.group

    # -- batching bursts of messages ----------------------------------------------------

    async def _send_batched(
        self,
        version: RoomVersion,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        txn: tuple[str, str | None, str] | None,
        ts: int | None = None,
    ) -> Event:
        """Queue a non-state event; one drainer per room persists queued events as a
        chain in one transaction. Under load this turns N commits into one; alone, an
        event goes straight through (a batch of one)."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(room_id, [])
        queue.append(_Queued(sender, event_type, content, txn, future, ts))
        if room_id not in self._drainers:
            task = asyncio.create_task(self._drain(version, room_id))
            self._drainers[room_id] = task
        return await future

    async def _drain(self, version: RoomVersion, room_id: str) -> None:
        try:
            queue = self._queues[room_id]
            while queue:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                try:
                    await self._send_chain(version, room_id, batch)
                except BaseException as e:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(
                                e if isinstance(e, Exception) else RuntimeError("cancelled")
                            )
                    if not isinstance(e, Exception):
                        raise
        finally:
            self._drainers.pop(room_id, None)
            if not self._queues.get(room_id):
                self._queues.pop(room_id, None)

    async def _send_chain(self, version: RoomVersion, room_id: str, batch: list[_Queued]) -> None:
        async with self.locks.hold(room_id):
            base = await self._prepare(version, room_id)
            if base.group is None:
                # A fork resolved just now: give the resolved state a group the whole
                # chain can share.
                base.group = await self._room_state.store_group(room_id, base.state_before)
            auth_cache: dict[frozenset, tuple[list[str], dict]] = {}
            built: list[tuple[_Queued, Event]] = []
            in_batch: dict[tuple[str, str | None, str], Event] = {}
            repeats: list[tuple[_Queued, Event]] = []
            for item in batch:
                if item.txn is not None and item.txn in in_batch:
                    repeats.append((item, in_batch[item.txn]))
                    continue
                if item.txn is not None and item.txn in self._recent_txns:
                    existing = await self._stores.events.get_event(self._recent_txns[item.txn])
                    if existing is not None:
                        item.future.set_result(existing)
                        continue
                try:
                    event = await self._build_on(
                        version,
                        base,
                        room_id,
                        item.sender,
                        item.event_type,
                        item.content,
                        None,
                        None,
                        auth_cache,
                        ts=item.ts,
                    )
                except MatrixError as e:
                    item.future.set_exception(e)
                    continue
                built.append((item, event))
                if item.txn is not None:
                    in_batch[item.txn] = event
                base.advance(event)
            if not built:
                return
            txns = [(*item.txn, ev.event_id) for item, ev in built if item.txn is not None]
            await self._persister.persist_chain([ev for _, ev in built], base.group, txns)
            for item, event in built:
                if item.txn is not None:
                    self._remember_txn(item.txn, event.event_id)
        for item, event in [*built, *repeats]:
            if not item.future.done():
                item.future.set_result(event)

    async def create_room_event(
        self, version: RoomVersion, sender: str, content: dict[str, Any], room_id: str | None
    ) -> Event:
        """Build and persist the m.room.create event that starts a room.

        In v12 `room_id` must be None: the room ID is derived from this event, so two
        identical requests in the same millisecond would name the same room. The room
        row is claimed atomically; on a clash the event is rebuilt a millisecond later.
        """
        ts = self.now_ms()
        for _ in range(MAX_CREATE_ATTEMPTS):
            event = _build_event(
                version,
                room_id=None if version.room_id_is_create_event_id else room_id,
                sender=sender,
                type="m.room.create",
                content=content,
                state_key="",
                prev_event_ids=[],
                auth_event_ids=[],
                depth=1,
                origin_server_ts=ts,
                server_name=self._server_name,
                signing_key=self._signing_key,
            )  # format-checked by build_event
            refusal = check_with_auth_state(event, {})
            if refusal is not None:
                raise forbidden(refusal)
            if await self._stores.rooms.store_room(
                event.room_id, version.identifier, sender, created_ts=event.origin_server_ts
            ):
                break
            if not version.room_id_is_create_event_id:
                room_id = await self.new_room_id()
            ts += 1
        else:
            raise MatrixError(500, "M_UNKNOWN", "Could not allocate a room ID")
        async with self.locks.hold(event.room_id):
            await self._persister.persist(event, state_before={})
        return event


def _build_event(version: RoomVersion, **fields: Any) -> Event:
    """build_event, whose own format check (size, canonical JSON of client content)
    becomes a 413 (too large) or 400 instead of an unhandled 500."""
    try:
        return build_event(version, **fields)
    except EventFormatError as e:
        raise _format_error(e) from None


def _format_error(e: EventFormatError) -> MatrixError:
    if "65" in str(e) or "large" in str(e).lower() or "bytes" in str(e):
        return MatrixError(413, "M_TOO_LARGE", f"Event is too large: {e}")
    return MatrixError(400, "M_BAD_JSON", f"Invalid event: {e}")
