"""PUT /_matrix/federation/v1/send/{txnId}: a peer pushes PDUs and EDUs.

Idempotent per (origin, txnId): the stored answer is replayed for a retried
transaction. At most 50 PDUs and 100 EDUs. Each PDU gets its own result; one bad PDU
never rejects the rest. PDUs of different rooms are processed concurrently, those of one
room in order (the room service serialises writes per room anyway). If processing runs
longer than `RESPONSE_DEADLINE_S`, we answer anyway and let the rest finish in the
background, so the sender's request does not time out and get retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from federation.acl import room_acl, server_allowed
from federation.appkeys import EDU_HANDLERS, INBOUND, INGEST
from federation.inbound import PduRejected, strip_unsigned_for_ingest
from federation.server.auth_middleware import body_of, origin_of
from federation.server.common import require_dict, stores_of
from homeserver.errors import MatrixError
from homeserver.events import get_room_version
from homeserver.events.hashing import compute_event_id
from homeserver.http import json_response, path_param
from homeserver.rooms.ingest import Outcome

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
RESPONSE_DEADLINE_S = 50.0

PduResult = dict[str, str]


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


async def _process_pdu(
    request: web.Request, origin: str, pdu: Any, index: int
) -> tuple[str, PduResult]:
    stores = stores_of(request)
    room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
    if not isinstance(room_id, str):
        return _pdu_key(pdu, None, index), {"error": "PDU has no room_id"}
    version_id = await stores.rooms.get_room_version(room_id)
    if version_id is None:
        return _pdu_key(pdu, None, index), {"error": f"Unknown room {room_id}"}
    try:
        version = get_room_version(version_id)
    except KeyError:
        return _pdu_key(pdu, None, index), {"error": "Unsupported room version"}
    key = _pdu_key(pdu, version, index)
    if not server_allowed(await room_acl(stores, room_id), origin):
        return key, {"error": "Server is denied by the room's server ACL"}
    try:
        event = await request.config_dict[INBOUND].check_pdu(
            strip_unsigned_for_ingest(pdu), version
        )
    except PduRejected as e:
        log.info("PDU %s from %s rejected: %s", key, origin, e)
        return key, {"error": str(e)}
    try:
        result = await request.config_dict[INGEST].receive(event, origin)
    except Exception as e:
        log.exception("ingest of %s from %s failed", event.event_id, origin)
        return event.event_id, {"error": f"Failed to process event: {type(e).__name__}"}
    if result.outcome == Outcome.REJECTED:
        return event.event_id, {"error": f"Rejected: {result.reason}"}
    return event.event_id, {}


async def _process_room(
    request: web.Request, origin: str, items: list[tuple[int, Any]], results: dict[str, PduResult]
) -> None:
    for index, pdu in items:
        key, result = await _process_pdu(request, origin, pdu, index)
        results[key] = result


async def _process_edus(request: web.Request, origin: str, edus: list[Any]) -> None:
    handlers = request.config_dict[EDU_HANDLERS]
    for edu in edus:
        if not isinstance(edu, dict):
            continue
        edu_type, content = edu.get("edu_type"), edu.get("content")
        handler = handlers.get(edu_type) if isinstance(edu_type, str) else None
        if handler is None or not isinstance(content, dict):
            continue
        try:
            await handler(origin, content)
        except Exception:
            log.exception("EDU %s from %s failed", edu_type, origin)


async def put_send(request: web.Request) -> web.Response:
    txn_id = path_param(request, "txn_id")
    origin = origin_of(request)
    body = require_dict(body_of(request))
    pdus = body.get("pdus", [])
    edus = body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise MatrixError(400, "M_BAD_JSON", "pdus and edus must be arrays")
    if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
        raise MatrixError(400, "M_BAD_JSON", "Too many PDUs or EDUs in one transaction")
    if body.get("origin", origin) != origin:
        raise MatrixError(400, "M_BAD_JSON", "Transaction origin does not match the signature")
    stores = stores_of(request)
    cached = await stores.transactions.get_inbound_txn(origin, txn_id)
    if cached is not None:
        return json_response(cached)

    by_room: dict[str, list[tuple[int, Any]]] = {}
    for index, pdu in enumerate(pdus):
        room = pdu.get("room_id") if isinstance(pdu, dict) else None
        by_room.setdefault(room if isinstance(room, str) else f"\0{index}", []).append((index, pdu))
    results: dict[str, PduResult] = {}
    tasks = [
        asyncio.ensure_future(_process_room(request, origin, items, results))
        for items in by_room.values()
    ]
    tasks.append(asyncio.ensure_future(_process_edus(request, origin, edus)))
    done, pending = await asyncio.wait(tasks, timeout=RESPONSE_DEADLINE_S)
    if pending:
        log.warning(
            "transaction %s from %s: answering before %d rooms finished",
            txn_id,
            origin,
            len(pending),
        )
    response = {"pdus": results}
    if not pending:
        await stores.transactions.set_inbound_txn(origin, txn_id, response)
    return json_response(response)


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/v1/send/{txn_id}", put_send)
