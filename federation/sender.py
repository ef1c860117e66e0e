"""Outbound federation: per-destination transaction queues over a durable outbox.

Why it is shaped like this:

- Durability: `send_event` / `send_edu` only append to the outbox table
  (`TransactionStore.enqueue_pdus` / `enqueue_edu`). A worker per destination peeks the
  oldest items, sends them as one transaction and acks them only after the peer answered
  200, so an event accepted while a peer is down, or while we crash or restart, is still
  delivered later (`start()` wakes every destination that has items queued).
- One transaction in flight per destination (one worker task each), at most 50 PDUs and
  100 EDUs per transaction (the spec's limits), PDUs in the order they were queued.
- Failures back off exponentially per destination; the retry state lives in the
  database (`destination_retry`) so a restart does not hammer a dead peer, and
  `notify_peer_up(origin)` (a request *from* that peer) cuts the wait short.
- A new transaction ID per attempt: the queue may have grown between attempts, and a
  receiver deduplicating on the transaction ID would otherwise drop the new items.
- Bounded, whatever a peer does (servers die for good every day, and a big room has
  hundreds of them): a destination that is backing off gets no new PDUs queued; its
  rooms' newest events wait as catch-up events instead (one per room, sent first once
  it answers; it fetches the rest from us with get_missing_events, as from Synapse's
  catch-up), and typing and presence for it are not queued. A backlog past
  `max_queued_pdus` (a peer that answers, but slower than we send) is folded into
  catch-up events too; past `max_queued_trimmable_edus` receipts, typing and
  presence the oldest of those are dropped, and past `max_queued_coalescable_edus`
  device-list and signing-key updates only the newest per user stays. To-device
  messages cannot be fetched again, so they have a cap of their own, far above any
  honest backlog (`max_queued_to_device_edus`, 10,000 per destination: one EDU per
  sendToDevice request, each bounded by the request size); only a server gone for
  good, or a local user flooding it, reaches it, and then the oldest go (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from federation.client import FederationError, fed_path
from homeserver.events import Event
from homeserver.storage.transactions import BacklogBounds, OutboxBatch, RetryState

log = logging.getLogger(__name__)

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
# A peer answering with one of these will not accept the batch if we send it again.
PERMANENT_FAILURES = frozenset({400, 403, 413})
# EDUs stale within seconds: not queued for a destination that is backing off.
TRANSIENT_EDU_TYPES = frozenset({"m.typing", "m.presence"})
# EDUs whose oldest may be dropped from a long backlog (a receipt is superseded by the
# user's next one; the peer loses a read marker, not a message).
TRIMMABLE_EDU_TYPES = ("m.typing", "m.presence", "m.receipt")
# EDUs of which the newest per user is enough (the peer refetches a user's whole
# device list when an update's prev_id shows it missed one; a signing key update
# carries all the user's current keys): a long backlog keeps only those.
COALESCABLE_EDU_TYPES = ("m.device_list_update", "m.signing_key_update")
# EDUs kept until the cap of their own (max_queued_to_device_edus).
CAPPED_EDU_TYPES = ("m.direct_to_device",)
# Capped EDUs queued for a destination between two enforcements of the cap at enqueue
# time, and the destinations counted at most (past it the counts restart).
CAP_CHECK_EVERY = 1_000
MAX_CAP_COUNTERS = 10_000
# What became of one transaction (FederationSender._deliver).
SENT, DROPPED, RETRY = "sent", "dropped", "retry"


@dataclass(frozen=True)
class SenderSettings:
    """Backoff and timeouts; tests shorten them (composition.Overrides.sender_settings)."""

    min_retry_interval_s: float = 10.0
    max_retry_interval_s: float = 3600.0
    retry_multiplier: float = 2.0
    request_timeout_s: float = 60.0
    max_pdus: int = MAX_PDUS_PER_TXN
    max_edus: int = MAX_EDUS_PER_TXN
    # A destination's queue past these is folded/trimmed (see the module docstring).
    max_queued_pdus: int = 1_000
    max_queued_trimmable_edus: int = 1_000
    max_queued_coalescable_edus: int = 1_000
    max_queued_to_device_edus: int = 10_000

    def backlog_bounds(self) -> BacklogBounds:
        return BacklogBounds(
            self.max_queued_pdus,
            TRIMMABLE_EDU_TYPES,
            self.max_queued_trimmable_edus,
            COALESCABLE_EDU_TYPES,
            self.max_queued_coalescable_edus,
            CAPPED_EDU_TYPES,
            self.max_queued_to_device_edus,
        )


class OutboxStore(Protocol):
    """The part of homeserver.storage.TransactionStore the sender uses."""

    async def enqueue_pdu_batch(
        self, destinations: Iterable[str], event_ids: Sequence[str]
    ) -> None: ...
    async def enqueue_edu(
        self, destination: str, edu: dict[str, Any], *, transient: bool = False
    ) -> None: ...
    async def peek(self, destination: str, pdu_limit: int, edu_limit: int) -> OutboxBatch: ...
    async def ack(
        self, destination: str, up_to_id: int, catch_up: Sequence[tuple[str, str]] = ()
    ) -> int: ...
    async def ack_delivery(
        self,
        destination: str,
        up_to_id: int,
        event_ids: Iterable[str],
        ts: int | None = None,
        catch_up: Sequence[tuple[str, str]] = (),
    ) -> None: ...
    async def compact(self, destination: str, bounds: BacklogBounds) -> bool: ...
    async def trim_edus(self, destination: str, edu_types: Sequence[str], keep: int) -> int: ...
    async def destinations_with_pending(self) -> list[str]: ...
    async def get_retry_state(self, destination: str) -> RetryState | None: ...
    async def set_retry_state(
        self, destination: str, failure_ts: int | None, retry_last_ts: int, retry_interval_ms: int
    ) -> None: ...
    async def clear_retry_state(self, destination: str) -> None: ...


class EventSource(Protocol):
    async def get_events(self, event_ids: Iterable[str]) -> Mapping[str, Event]: ...


class TransactionTransport(Protocol):
    """What the sender needs from federation.client.FederationClient."""

    async def put_json(
        self, destination: str, path: str, json_body: Any, *, timeout: float | None = None
    ) -> Any: ...


class FederationSender:
    """Implements homeserver.rooms.ports.OutboundEvents, plus EDUs for other areas."""

    def __init__(
        self,
        outbox: OutboxStore,
        events: EventSource,
        transport: TransactionTransport,
        server_name: str,
        settings: SenderSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._events = events
        self._transport = transport
        self._server_name = server_name
        self.settings = settings or SenderSettings()
        self._clock = clock
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()  # woken since the worker's last peek
        self._pokes: dict[str, asyncio.Event] = {}  # interrupts a backoff sleep
        self._peer_up: set[str] = set()  # backoff to be cleared by the worker
        self._backing_off: set[str] = set()
        self._txn_prefix = str(int(clock() * 1000))
        self._txn_counter = itertools.count(1)
        self._stopping = False
        # With federation sender workers, each destination is delivered by one process:
        # `owns` says whether it is this one; a wake-up for another destination goes to
        # `elsewhere(destination, peer_up)` (the replication bus) instead.
        self.owns: Callable[[str], bool] = lambda _destination: True
        self.elsewhere: Callable[[str, bool], None] | None = None
        # Capped EDUs queued here per destination since its cap was last enforced: a
        # destination backing off is compacted only when retried (up to an hour), so
        # enqueueing enforces the cap too, every CAP_CHECK_EVERY of them.
        self._capped_since_check: dict[str, int] = {}
        # Read by the metrics collector (synapse_federation_client_sent_*).
        self.transactions_sent = 0
        self.transactions_failed = 0
        self.pdus_sent = 0
        self.edus_sent = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- queueing (the public API) --------------------------------------------------------

    async def send_event(self, event: Event, destinations: Iterable[str]) -> None:
        """send_events for one event."""
        await self.send_events([event], destinations)

    async def send_events(self, events: Sequence[Event], destinations: Iterable[str]) -> None:
        """Queue persisted events of one server (a chain of our messages), in this
        order, for each destination in one write, and wake their workers."""
        if not events:
            return
        # Never back to ourselves, nor to the server that created the events (it has them).
        skip = {self._server_name, events[0].origin}
        dests = [d for d in dict.fromkeys(destinations) if d and d not in skip]
        if not dests:
            return
        await self._outbox.enqueue_pdu_batch(dests, [e.event_id for e in events])
        for dest in dests:
            self.wake(dest)

    async def send_edu(
        self, destinations: Iterable[str], edu_type: str, content: Mapping[str, Any]
    ) -> None:
        """Queue one EDU (`{"edu_type", "content"}`) for each destination."""
        edu = {"edu_type": edu_type, "content": dict(content)}
        for dest in dict.fromkeys(destinations):
            if not dest or dest == self._server_name:
                continue
            await self._outbox.enqueue_edu(dest, edu, transient=edu_type in TRANSIENT_EDU_TYPES)
            if edu_type in CAPPED_EDU_TYPES:
                await self._count_capped(dest)
            self.wake(dest)

    async def _count_capped(self, dest: str) -> None:
        """Enforce `max_queued_to_device_edus` every CAP_CHECK_EVERY capped EDUs queued
        here for `dest`: its backlog stays under the cap plus that many per process."""
        counts = self._capped_since_check
        counts[dest] = counts.get(dest, 0) + 1
        if counts[dest] < CAP_CHECK_EVERY:
            if len(counts) > MAX_CAP_COUNTERS:  # many destinations: start counting again
                counts.clear()
            return
        del counts[dest]
        cap = self.settings.max_queued_to_device_edus
        lost = await self._outbox.trim_edus(dest, CAPPED_EDU_TYPES, cap)
        if lost:
            log.warning("%s: dropped the oldest %d to-device EDUs (cap %d)", dest, lost, cap)

    def wake(self, destination: str) -> None:
        """Make sure a worker will look at the destination's queue soon."""
        if self._stopping:
            return
        if not self.owns(destination):
            if self.elsewhere is not None:
                self.elsewhere(destination, False)
            return
        self._dirty.add(destination)
        task = self._workers.get(destination)
        if task is None or task.done():
            self._workers[destination] = asyncio.get_running_loop().create_task(
                self._run(destination), name=f"federation-sender:{destination}"
            )

    def notify_peer_up(self, destination: str) -> None:
        """The peer just talked to us: stop backing off and flush its queue now."""
        if not self.owns(destination):
            if self.elsewhere is not None:
                self.elsewhere(destination, True)
            return
        if destination not in self._backing_off:
            return
        self._peer_up.add(destination)
        poke = self._pokes.get(destination)
        if poke is not None:
            poke.set()
        self.wake(destination)

    def is_backing_off(self, destination: str) -> bool:
        return destination in self._backing_off

    @property
    def destinations_backing_off(self) -> int:
        return len(self._backing_off)

    async def reset_connection(self, destination: str) -> None:
        """An admin asked to retry now: forget the backoff (stored and in memory) and
        let a waiting worker go ahead."""
        await self._outbox.clear_retry_state(destination)
        if not self.owns(destination):
            # Delivered by another process (a federation sender worker), which is the
            # one sleeping out the backoff: tell it, whatever this process knows.
            if self.elsewhere is not None:
                self.elsewhere(destination, True)
        elif destination in self._backing_off:
            self.notify_peer_up(destination)

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume delivery of everything left in the outbox by a previous run."""
        self._stopping = False
        for dest in await self._outbox.destinations_with_pending():
            if self.owns(dest):
                self.wake(dest)

    async def stop(self) -> None:
        """Cancel every worker; unsent items stay in the outbox for the next start."""
        self._stopping = True
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no worker runs (tests, orderly shutdown)."""
        async with asyncio.timeout(timeout):
            while any(not t.done() for t in self._workers.values()):
                await asyncio.gather(*self._workers.values(), return_exceptions=True)

    # -- the per-destination worker -------------------------------------------------------

    async def _run(self, dest: str) -> None:
        me = asyncio.current_task()
        try:
            while not self._stopping:
                state = await self._outbox.get_retry_state(dest)
                if dest in self._peer_up:
                    self._peer_up.discard(dest)
                    if state is not None:
                        await self._outbox.clear_retry_state(dest)
                        state = None
                if state is not None and state.failure_ts is not None:
                    self._backing_off.add(dest)
                    delay_ms = state.retry_last_ts + state.retry_interval_ms - self._now_ms()
                    if delay_ms > 0 and not await self._sleep(dest, delay_ms / 1000):
                        continue  # poked: re-read the state (the peer may be back)
                self._dirty.discard(dest)
                batch = await self._next_batch(dest)
                if not batch:
                    if dest in self._dirty:
                        continue
                    return
                outcome = await self._deliver(dest, batch)
                if outcome == SENT:
                    await self._outbox.ack_delivery(
                        dest, batch.up_to_id, batch.pdu_event_ids, self._now_ms(), batch.catch_up
                    )
                elif outcome == DROPPED:
                    await self._outbox.ack(dest, batch.up_to_id, batch.catch_up)
                if outcome != RETRY:
                    if state is not None:
                        await self._outbox.clear_retry_state(dest)
                    self._backing_off.discard(dest)
                else:
                    await self._record_failure(dest, state)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill delivery for good: the next wake retries
            log.exception("federation sender for %s failed", dest)
        finally:
            if self._workers.get(dest) is me:
                del self._workers[dest]

    async def _next_batch(self, dest: str) -> OutboxBatch:
        """The next transaction's items; a full batch means a backlog, which is
        bounded first (compact) if it has grown past the settings' limits."""
        s = self.settings
        batch = await self._outbox.peek(dest, s.max_pdus, s.max_edus)
        full = len(batch.pdu_event_ids) >= s.max_pdus or len(batch.edus) >= s.max_edus
        if full and await self._outbox.compact(dest, s.backlog_bounds()):
            log.info("backlog for %s was past its bounds: compacted", dest)
            batch = await self._outbox.peek(dest, s.max_pdus, s.max_edus)
        return batch

    async def _sleep(self, dest: str, seconds: float) -> bool:
        """Sleep for the backoff; False if cut short by notify_peer_up."""
        poke = self._pokes.setdefault(dest, asyncio.Event())
        poke.clear()
        try:
            await asyncio.wait_for(poke.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _record_failure(self, dest: str, state: RetryState | None) -> None:
        s = self.settings
        now = self._now_ms()
        if state is None or state.failure_ts is None:
            interval = s.min_retry_interval_s * 1000
            first = now
        else:
            interval = state.retry_interval_ms * s.retry_multiplier
            first = state.failure_ts
        interval = max(s.min_retry_interval_s * 1000, min(interval, s.max_retry_interval_s * 1000))
        await self._outbox.set_retry_state(dest, first, now, int(interval))
        self._backing_off.add(dest)

    async def _deliver(self, dest: str, batch: OutboxBatch) -> str:
        """Send one transaction: SENT, DROPPED (undeliverable: nothing to send, or the
        peer refused it for good) or RETRY (back off and send it again)."""
        events = await self._events.get_events(batch.pdu_event_ids)
        pdus = [_wire_pdu(events[e]) for e in batch.pdu_event_ids if e in events]
        if not pdus and not batch.edus:
            return DROPPED
        txn_id = f"{self._txn_prefix}_{next(self._txn_counter)}"
        body: dict[str, Any] = {
            "origin": self._server_name,
            "origin_server_ts": self._now_ms(),
            "pdus": pdus,
        }
        if batch.edus:
            body["edus"] = batch.edus
        path = fed_path("/_matrix/federation/v1/send/{}", txn_id)
        try:
            response = await self._transport.put_json(
                dest, path, body, timeout=self.settings.request_timeout_s
            )
        except FederationError as e:
            if e.status in PERMANENT_FAILURES:
                log.warning("%s refused transaction %s for good, dropping it: %s", dest, txn_id, e)
                return DROPPED
            log.info("transaction %s to %s failed: %s", txn_id, dest, e)
            self.transactions_failed += 1
            return RETRY
        self.transactions_sent += 1
        self.pdus_sent += len(pdus)
        self.edus_sent += len(batch.edus)
        _log_pdu_errors(dest, response)
        return SENT


def _wire_pdu(event: Event) -> dict[str, Any]:
    """The PDU as sent: v3+ events carry no event_id; local-only unsigned keys dropped."""
    pdu = dict(event.pdu)
    if not event.room_version.event_id_in_event:
        pdu.pop("event_id", None)
    unsigned = pdu.get("unsigned")
    if isinstance(unsigned, dict):
        kept = {k: v for k, v in unsigned.items() if k not in ("transaction_id",)}
        if kept:
            pdu["unsigned"] = kept
        else:
            pdu.pop("unsigned")
    return pdu


def _log_pdu_errors(dest: str, response: Any) -> None:
    results = response.get("pdus") if isinstance(response, dict) else None
    if isinstance(results, dict):
        for event_id, result in results.items():
            if isinstance(result, dict) and result.get("error"):
                log.info("%s did not accept %s: %s", dest, event_id, result["error"])
