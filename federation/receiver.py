"""Receiving a /send transaction: PDUs to the room service, EDUs to their services.

Idempotent per (origin, txnId): the stored answer is replayed for a retried
transaction. Each PDU gets its own result; one bad PDU never rejects the rest. PDUs of
different rooms are processed concurrently, those of one room in order (the room
service serialises writes per room anyway). In a deployment with workers, `ingest` and
`edus` hand what the checks passed to the processes that write it
(homeserver.replication.federation); when none can, the transaction is answered 503
and not remembered, so the peer sends it again. If processing runs longer than
`RESPONSE_DEADLINE_S`, we answer anyway and let the rest finish as tracked background
tasks (stopped at shutdown), so the sender's request does not time out and get retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from federation.acl import room_acl, server_allowed
from federation.edus import EduHandler, dispatch
from federation.inbound import InboundChecks, PduRejected, strip_unsigned_for_ingest
from homeserver.background import BackgroundTasks
from homeserver.errors import MatrixError
from homeserver.events import Event, get_room_version
from homeserver.events.hashing import compute_event_id
from homeserver.replication.federation import EduSink, WriterUnavailable
from homeserver.storage import Stores

log = logging.getLogger(__name__)

RESPONSE_DEADLINE_S = 50.0
# Transactions of one origin still being processed (answered or not): past this a new
# one is refused with 429 until one finishes. A peer whose transactions outlast the
# deadline (PDUs whose missing history it serves slowly) would otherwise pile up
# background work here without end; a sender sends one transaction at a time anyway.
MAX_UNFINISHED_PER_ORIGIN = 3

PduResult = dict[str, str]


class Ingest(Protocol):
    """rooms.ingest.RemoteEventIngest, or replication.federation.RoutedIngest."""

    async def receive_all(self, events: list[Event], origin: str) -> list[str | None]: ...


# Told (PDU count, EDU count) of every new transaction (not of replays): the metrics.
ReceivedObserver = Callable[[int, int], None]


def _pdu_key(pdu: Any, room_version: Any, index: int) -> str:
    """The event ID a PDU's result is filed under (best effort for broken PDUs)."""
    if isinstance(pdu, dict):
        if room_version is not None:
            try:
                if room_version.event_id_in_event:
                    eid = pdu.get("event_id")
                    if isinstance(eid, str):
                        return eid
                else:
                    return compute_event_id(pdu, room_version)
            except Exception:
                pass
        eid = pdu.get("event_id")
        if isinstance(eid, str):
            return eid
    return f"invalid_pdu_{index}"


async def _written(job: Coroutine[Any, Any, None]) -> bool:
    """False when no process could write what `job` carries (an expected state while
    a writer restarts: the transaction is answered 503, not logged as a failure)."""
    try:
        await job
    except WriterUnavailable as e:
        log.info("no writer: %s", e)
        return False
    return True


class TransactionReceiver:
    def __init__(
        self,
        stores: Stores,
        checks: InboundChecks,
        ingest: Ingest,
        edu_handlers: dict[str, EduHandler],
        tasks: BackgroundTasks,
        response_deadline_s: float = RESPONSE_DEADLINE_S,
        observer: ReceivedObserver | None = None,
        edus: EduSink | None = None,
    ) -> None:
        """`ingest`: RemoteEventIngest or anything with its `receive_all`; `edus`: where a
        transaction's EDUs go (default: `edu_handlers`, here)."""
        self._stores = stores
        self._checks = checks
        self._ingest = ingest
        self._edu_handlers = edu_handlers
        self._edus = edus or self.handle_edus
        self._tasks = tasks
        self._deadline_s = response_deadline_s
        self._observer = observer
        self._unfinished: dict[str, int] = {}  # origin -> transactions being processed

    async def receive(
        self, origin: str, txn_id: str, pdus: list[Any], edus: list[Any]
    ) -> dict[str, Any]:
        """The transaction's answer (`{"pdus": {event_id: {} or {"error": ...}}}`)."""
        cached = await self._stores.transactions.get_inbound_txn(origin, txn_id)
        if cached is not None:
            return cached
        if self._unfinished.get(origin, 0) >= MAX_UNFINISHED_PER_ORIGIN:
            raise MatrixError(
                429, "M_LIMIT_EXCEEDED", "Earlier transactions are still being processed",
                retry_after_ms=1000,
            )  # fmt: skip
        if self._observer is not None:
            self._observer(len(pdus), len(edus))
        by_room: dict[str, list[tuple[int, Any]]] = {}
        for index, pdu in enumerate(pdus):
            room = pdu.get("room_id") if isinstance(pdu, dict) else None
            key = room if isinstance(room, str) else f"\0{index}"
            by_room.setdefault(key, []).append((index, pdu))
        results: dict[str, PduResult] = {}
        work = [self._process_room(origin, items, results) for items in by_room.values()]
        work.append(self._edus(origin, edus))
        tasks = [self._tasks.spawn(_written(job), f"txn {origin}") for job in work]
        self._track(origin, tasks)
        done, pending = await asyncio.wait(tasks, timeout=self._deadline_s)
        if any(not t.cancelled() and t.exception() is None and not t.result() for t in done):
            log.warning("transaction %s from %s: no process could write it", txn_id, origin)
            raise MatrixError(503, "M_UNKNOWN", "This server cannot write now; try again")
        if pending:
            log.warning(
                "transaction %s from %s: answering before %d rooms finished",
                txn_id,
                origin,
                len(pending),
            )
        response: dict[str, Any] = {"pdus": results}
        if not pending:
            await self._stores.transactions.set_inbound_txn(origin, txn_id, response)
        return response

    def _track(self, origin: str, tasks: list[asyncio.Task[bool]]) -> None:
        """Count the transaction as unfinished until its last task ends."""
        self._unfinished[origin] = self._unfinished.get(origin, 0) + 1
        left = [len(tasks)]

        def one_done(_task: asyncio.Task[bool]) -> None:
            left[0] -= 1
            if left[0] == 0:
                count = self._unfinished.pop(origin, 1) - 1
                if count > 0:
                    self._unfinished[origin] = count

        for task in tasks:
            task.add_done_callback(one_done)

    async def _process_room(
        self, origin: str, items: list[tuple[int, Any]], results: dict[str, PduResult]
    ) -> None:
        """Check each PDU of one room, then have the room's writer take the good ones,
        in their order (one request to it in a deployment)."""
        checked: list[Event] = []
        acls: dict[str, bool] = {}  # the room's ACL, read once per transaction
        for index, pdu in items:
            key, outcome = await self._check_pdu(origin, pdu, index, acls)
            if isinstance(outcome, Event):
                checked.append(outcome)
            else:
                results[key] = outcome
        if checked:
            errors = await self._ingest.receive_all(checked, origin)
            for event, error in zip(checked, errors, strict=True):
                results[event.event_id] = {} if error is None else {"error": error}

    async def _check_pdu(
        self, origin: str, pdu: Any, index: int, acls: dict[str, bool]
    ) -> tuple[str, PduResult | Event]:
        """The checks that need no room state: the event, or its key and error."""
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        if not isinstance(room_id, str):
            return _pdu_key(pdu, None, index), {"error": "PDU has no room_id"}
        version_id = await self._stores.rooms.get_room_version(room_id)
        if version_id is None:
            return _pdu_key(pdu, None, index), {"error": f"Unknown room {room_id}"}
        try:
            version = get_room_version(version_id)
        except KeyError:
            return _pdu_key(pdu, None, index), {"error": "Unsupported room version"}
        key = _pdu_key(pdu, version, index)
        if room_id not in acls:
            acls[room_id] = server_allowed(await room_acl(self._stores, room_id), origin)
        if not acls[room_id]:
            return key, {"error": "Server is denied by the room's server ACL"}
        try:
            event = await self._checks.check_pdu(strip_unsigned_for_ingest(pdu), version)
        except PduRejected as e:
            log.info("PDU %s from %s rejected: %s", key, origin, e)
            return key, {"error": str(e)}
        return key, event

    async def handle_edus(self, origin: str, edus: list[Any]) -> None:
        """Each EDU to its handler in this process (one that fails is logged)."""
        await dispatch(self._edu_handlers, origin, edus)
