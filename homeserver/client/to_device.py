"""PUT /sendToDevice/{eventType}/{txnId}: thin handler over ToDeviceService."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import TO_DEVICE, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.routes import add_route
from homeserver.http import json_response, path_param, read_json_body


async def send_to_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    event_type = path_param(request, "eventType")
    txn_id = path_param(request, "txnId")
    body = await read_json_body(request)
    await request.config_dict[TO_DEVICE].send(
        requester.user_id, requester.device_id, str(event_type), str(txn_id), body
    )
    return json_response({})


def setup(mounts: Mounts) -> None:
    add_route(mounts.client, "PUT", "/sendToDevice/{eventType}/{txnId}", send_to_device)
