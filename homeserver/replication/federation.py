"""Federation transactions in a deployment: checked where they land, written by writers.

A federation inbound worker serves `PUT /_matrix/federation/v1/send/{txnId}` itself:
it authenticates the peer, runs the receiving checks that need no room state (format,
signatures, hashes: the CPU-heavy part, and the one that fetches the peer's keys) and
then hands each room's PDUs (one request per room and transaction) to the process
writing the room (`room_writer`: an event persister by `sha256(room_id) mod N`, else
the main), which runs the rest of the receiving algorithm (missing events, auth,
state, soft-fail) under the room's lock. EDUs go to a writer of their stream
(EDU_STREAM), one request per stream and transaction: typing, receipts, to-device
messages, device-list updates and presence to a client reader named for that stream
in `stream_writers` (by `sha256(origin) mod N`, so one server's EDUs of a stream keep
going to one process; presence has one writer), else to the main, which writes every
stream (presence it hands to the presence writer when that is a worker). So a transaction is written while the main is stopped or busy, when its
rooms have event persisters and its EDUs' streams have writers among the readers.

Nothing acknowledged is lost: a writer that cannot be reached (connection refused) is
replaced by the next (another of the stream's writers, the main last), as the main
replaces an event persister, writing any room under the same locks. When none can
write, or a writer answers that it (or the database) is unavailable, the transaction
is answered 503 and not remembered, so the peer sends it again (PDUs already written
are then duplicates; to-device messages carry their message ID and are delivered once;
receipts and device-list updates say the same again). Typing and presence EDUs are
dropped instead (EPHEMERAL_STREAMS): stale by the time the main is back, they are not
worth holding up the transaction's messages.

Bounds: a transaction holds at most 50 PDUs and 100 EDUs (federation/server/
transactions.py), so at most 50 + 5 requests at once, over the Forwarder's pool
(FORWARD_CONNECTIONS) with its timeout (FORWARD_TIMEOUT_S), each tried on at most
every writer of its stream and the main.

The writer trusts what arrives on its replication listener (the shared secret
authenticates the worker), as it trusts its own checks in one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiohttp import web

from homeserver.errors import MatrixError, bad_json
from homeserver.events import Event, get_room_version
from homeserver.http import json_response

from .forward import Forwarder, Unreachable

log = logging.getLogger(__name__)

EVENTS_PATH = "/_replication/federation/events"  # the room's writer: checked PDUs of a room
EDUS_PATH = "/_replication/federation/edus"  # a stream's writer: a transaction's EDUs

# The stream each EDU type is written to (homeserver.config.workers EDU_STREAMS). No
# process understands other types: the
# inbound worker drops them, as a single process ignores them.
EDU_STREAM = {
    "m.typing": "typing",
    "m.receipt": "receipts",
    "m.presence": "presence",
    "m.device_list_update": "device_lists",
    "m.signing_key_update": "device_lists",
    "m.direct_to_device": "to_device",
}
# Streams whose EDUs are dropped rather than retried when no writer takes them.
EPHEMERAL_STREAMS = frozenset({"typing", "presence"})

# (origin, EDUs of one transaction): the local EDU handlers, run in order.
EduSink = Callable[[str, list[Any]], Coroutine[Any, Any, None]]


class WriterUnavailable(Exception):
    """No process could write what a transaction carries: answer it 503, remember nothing."""


class WriterFailed(Exception):
    """The writer answered but failed on what it was given (a bug, not an outage): the
    PDUs get an error result, as when a local ingest raises."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FederationWriter:
    """The writing side: the rest of the receiving algorithm for a PDU a federation
    inbound worker checked (the main, an event persister), and EDUs (the main: any;
    a client reader: those of the streams it writes, `streams`)."""

    def __init__(
        self, ingest: Any, edus: EduSink | None, streams: frozenset[str] | None = None
    ) -> None:
        self._ingest = ingest  # homeserver.rooms.ingest.RemoteEventIngest
        self._edus = edus
        self._streams = streams  # None: every stream

    async def serve_events(self, request: web.Request) -> web.Response:
        body = await request.json()
        origin, version_id, pdus = body.get("origin"), body.get("room_version"), body.get("pdus")
        ids = body.get("event_ids")
        if (
            not isinstance(origin, str)
            or not isinstance(pdus, list)
            or not all(isinstance(pdu, dict) for pdu in pdus)
            or not isinstance(ids, list)
            or len(ids) != len(pdus)
            or not all(isinstance(event_id, str) for event_id in ids)
        ):
            raise bad_json("origin, room_version, pdus and event_ids are required")
        try:
            version = get_room_version(version_id)
        except (KeyError, TypeError):
            raise bad_json("Unknown room version") from None
        # The IDs as the checks found them (a PDU whose content hash failed arrives
        # redacted, under its original ID), not computed again.
        events = [Event(pdu, version, event_id) for pdu, event_id in zip(pdus, ids, strict=True)]
        return json_response({"errors": await self._ingest.receive_all(events, origin)})

    async def serve_edus(self, request: web.Request) -> web.Response:
        body = await request.json()
        origin, edus = body.get("origin"), body.get("edus")
        if not isinstance(origin, str) or not isinstance(edus, list) or self._edus is None:
            raise bad_json("origin and edus are required")
        if self._streams is not None:  # another process's streams are not written here
            edus = [e for e in edus if _stream_of(e) in self._streams]
        await self._edus(origin, edus)
        return json_response({})


def _stream_of(edu: Any) -> str | None:
    kind = edu.get("edu_type") if isinstance(edu, dict) else None
    return EDU_STREAM.get(kind) if isinstance(kind, str) else None


class RoutedIngest:
    """The inbound worker's side: `receive_all` (RemoteEventIngest's signature) hands
    a room's checked events to the room's writer; `edus` hands EDUs to their streams'
    writers."""

    def __init__(
        self,
        forwarder: Forwarder,
        writer_url: Callable[[str], str | None],
        edu_writers: Callable[[str, str], Sequence[str]] = lambda _stream, _origin: (),
    ) -> None:
        self._forwarder = forwarder
        self._writer_url = writer_url  # room ID -> an event persister's URL, None: the main
        # (stream, origin) -> the URLs of the stream's writers besides the main, in the
        # order to try them.
        self._edu_writers = edu_writers

    async def receive_all(self, events: list[Event], origin: str) -> list[str | None]:
        """RemoteEventIngest.receive_all, by the writer of the events' room (one room)."""
        first = events[0]
        body = {
            "origin": origin,
            "room_version": first.room_version.identifier,
            "pdus": [event.pdu for event in events],
            "event_ids": [event.event_id for event in events],
        }
        url = self._writer_url(first.room_id)
        answer: Any = None
        if url is not None:
            try:
                answer = await self._call(url, EVENTS_PATH, body)
            except WriterFailed as e:
                log.error("Writing %d events of %s: %s", len(events), first.room_id, e)
                return [f"Failed to process event: {e.status}"] * len(events)
            except Unreachable:
                log.warning(
                    "Event persister %s unreachable: %s goes to the main", url, first.room_id
                )
        try:
            if answer is None:
                answer = await self._call(None, EVENTS_PATH, body)
        except WriterFailed as e:  # as a local ingest that raised: each PDU's error
            log.error("Writing %d events of %s: %s", len(events), first.room_id, e)
            return [f"Failed to process event: {e.status}"] * len(events)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if not isinstance(errors, list) or len(errors) != len(events):
            raise WriterUnavailable(f"unexpected answer for {len(events)} events: {answer}")
        return [e if isinstance(e, str) or e is None else str(e) for e in errors]

    async def edus(self, origin: str, edus: list[Any]) -> None:
        """Each stream's EDUs to a writer of the stream, the streams at once; raises
        WriterUnavailable (after all were tried) when a durable stream's could not be
        written."""
        by_stream: dict[str, list[Any]] = {}
        for edu in edus:
            stream = _stream_of(edu)
            if stream is not None:
                by_stream.setdefault(stream, []).append(edu)
        results = await asyncio.gather(
            *(self._stream_edus(origin, s, items) for s, items in by_stream.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _stream_edus(self, origin: str, stream: str, edus: list[Any]) -> None:
        body = {"origin": origin, "edus": edus}
        candidates: list[str | None] = [*self._edu_writers(stream, origin), None]
        for url in candidates:
            try:
                await self._call(url, EDUS_PATH, body)
                return
            except WriterFailed as e:  # as a local EDU handler that raised: logged
                log.error("%s EDUs from %s: %s", stream, origin, e)
                return
            except (Unreachable, WriterUnavailable) as e:
                if url is not None:
                    log.warning("%s writer %s unavailable (%s): trying the next", stream, url, e)
                    continue
                if stream in EPHEMERAL_STREAMS:
                    log.info("%d %s EDUs from %s dropped: %s", len(edus), stream, origin, e)
                    return
                raise

    async def _call(self, url: str | None, path: str, body: dict[str, Any]) -> Any:
        """The writer's JSON answer. Unreachable: a persister refused the connection
        (nothing was sent); WriterUnavailable: the main did, or no usable answer came."""
        try:
            status, answer = await self._forwarder.call(url, path, body)
        except Unreachable:
            if url is not None:
                raise
            raise WriterUnavailable("the main process is unreachable") from None
        except MatrixError as exc:
            raise WriterUnavailable(exc.message) from None
        if status in (502, 503, 504):  # the database, or a process behind it, is away
            raise WriterUnavailable(f"{path} answered {status}")
        if status != 200:  # the writer's handler failed on what it was given
            raise WriterFailed(status, f"{path} answered {status}: {answer}")
        return answer
