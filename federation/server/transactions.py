"""PUT /_matrix/federation/v1/send/{txnId}: a peer pushes PDUs and EDUs.

Parses the transaction (at most 50 PDUs and 100 EDUs, origin matching the signature)
and hands it to `federation.receiver.TransactionReceiver`.
"""

from __future__ import annotations

from aiohttp import web

from federation.appkeys import TRANSACTIONS
from federation.server.auth_middleware import body_of, origin_of
from federation.server.common import require_dict
from homeserver.errors import MatrixError
from homeserver.http import json_response, path_param

MAX_PDUS = 50
MAX_EDUS = 100


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
    answer = await request.config_dict[TRANSACTIONS].receive(origin, txn_id, pdus, edus)
    return json_response(answer)


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/v1/send/{txn_id}", put_send)
