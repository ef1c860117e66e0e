"""Dehydrated devices (MSC3814, unstable prefix org.matrix.msc3814.v1), served by
homeserver/e2ee/dehydration.py.

PUT, GET and DELETE /dehydrated_device; POST /dehydrated_device/{device_id}/events
(`{"next_batch": ...}`) for the to-device messages queued for it.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import DEHYDRATED_DEVICES, Mounts
from homeserver.client.auth import get_requester
from homeserver.http import json_response, read_json_body

PREFIX = "/unstable/org.matrix.msc3814.v1/dehydrated_device"


async def put_dehydrated_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    service = request.config_dict[DEHYDRATED_DEVICES]
    return json_response(await service.put(requester.user_id, body))


async def get_dehydrated_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    return json_response(await request.config_dict[DEHYDRATED_DEVICES].get(requester.user_id))


async def delete_dehydrated_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    service = request.config_dict[DEHYDRATED_DEVICES]
    return json_response(await service.delete(requester.user_id))


async def post_dehydrated_device_events(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request, allow_empty=True)
    service = request.config_dict[DEHYDRATED_DEVICES]
    device_id = request.match_info["device_id"]
    return json_response(await service.events(requester.user_id, device_id, body.get("next_batch")))


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    router.add_put(PREFIX, put_dehydrated_device)
    router.add_get(PREFIX, get_dehydrated_device)
    router.add_delete(PREFIX, delete_dehydrated_device)
    router.add_post(PREFIX + "/{device_id}/events", post_dehydrated_device_events)
