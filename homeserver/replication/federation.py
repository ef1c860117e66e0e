"""Federation transactions in a deployment: checked where they land, written by writers.

A federation inbound worker serves `PUT /_matrix/federation/v1/send/{txnId}` itself:
it authenticates the peer, runs the receiving checks that need no room state (format,
signatures, hashes: the CPU-heavy part, and the one that fetches the peer's keys) and
then hands each room's PDUs (one request per room and transaction) to the process
writing the room (`room_writer`: an event persister by `sha256(room_id) mod N`, else
the main), which runs the rest of the receiving algorithm (missing events, auth,
state, soft-fail) under the room's lock. EDUs go to the main in one request per
transaction: typing and presence live in its memory, and it is the one writer of the
receipts, to-device and device-list streams. So a transaction for rooms of the event
persisters is written while the main is stopped or busy, and the main does no
federation ingest for their rooms.

Nothing acknowledged is lost: a writer that cannot be reached (connection refused)
is replaced by the main, which writes any room under the same locks; when the main
cannot be reached either, or a writer answers that it (or the database) is
unavailable, the transaction is answered 503 and not remembered, so the peer sends it
again (PDUs already written are then duplicates; to-device messages carry their
message ID and are delivered once).

Bounds: a transaction holds at most 50 PDUs and 100 EDUs (federation/server/
transactions.py), so at most 51 requests, over the Forwarder's pool
(FORWARD_CONNECTIONS) with its timeout (FORWARD_TIMEOUT_S).

The writer trusts what arrives on its replication listener (the shared secret
authenticates the worker), as it trusts its own checks in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from homeserver.errors import MatrixError, bad_json
from homeserver.events import Event, get_room_version
from homeserver.http import json_response

from .forward import Forwarder, Unreachable

log = logging.getLogger(__name__)

EVENTS_PATH = "/_replication/federation/events"  # the room's writer: checked PDUs of a room
EDUS_PATH = "/_replication/federation/edus"  # the main: a transaction's EDUs

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
    """The writing side (the main, an event persister): the rest of the receiving
    algorithm for a PDU a federation inbound worker checked, and (the main) EDUs."""

    def __init__(self, ingest: Any, edus: EduSink | None) -> None:
        self._ingest = ingest  # homeserver.rooms.ingest.RemoteEventIngest
        self._edus = edus

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
        await self._edus(origin, edus)
        return json_response({})


class RoutedIngest:
    """The inbound worker's side: `receive_all` (RemoteEventIngest's signature) hands
    a room's checked events to the room's writer; `edus` hands EDUs to the main."""

    def __init__(self, forwarder: Forwarder, writer_url: Callable[[str], str | None]) -> None:
        self._forwarder = forwarder
        self._writer_url = writer_url  # room ID -> an event persister's URL, None: the main

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
        if edus:
            try:
                await self._call(None, EDUS_PATH, {"origin": origin, "edus": edus})
            except WriterFailed as e:  # as a local EDU handler that raised: logged
                log.error("EDUs from %s: %s", origin, e)

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
