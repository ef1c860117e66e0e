"""/keys/*: device and one-time key upload, query, claim, changes and cross-signing.

Thin handlers over homeserver.e2ee.keys.KeysService (built by homeserver/composition.py,
which also gives the accounts area the E2EE device hooks).
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import DEVICE_LISTS, E2EE_KEYS, UIA, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.routes import add_route
from homeserver.e2ee.reauth import uia_reauth
from homeserver.http import json_response, query_param, read_json_body
from homeserver.sync.tokens import StreamToken

PREFIXES = ("/v3", "/r0", "/unstable")


async def upload_keys(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    keys = request.config_dict[E2EE_KEYS]
    return json_response(await keys.upload(requester.user_id, requester.device_id, body))


async def query_keys(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    return json_response(await request.config_dict[E2EE_KEYS].query(requester.user_id, body))


async def claim_keys(request: web.Request) -> web.Response:
    await get_requester(request)
    body = await read_json_body(request)
    return json_response(await request.config_dict[E2EE_KEYS].claim(body))


async def key_changes(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    since = query_param(request, "from", StreamToken.decode, required=True)
    until = query_param(request, "to", StreamToken.decode, required=True)
    delta = await request.config_dict[DEVICE_LISTS].changes(requester.user_id, since, until)
    return json_response({"changed": delta.changed, "left": delta.left})


async def upload_device_signing(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    reauth = uia_reauth(request.config_dict[UIA])
    keys = request.config_dict[E2EE_KEYS]
    return json_response(await keys.upload_cross_signing(requester.user_id, body, reauth))


async def upload_signatures(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    keys = request.config_dict[E2EE_KEYS]
    return json_response(await keys.upload_signatures(requester.user_id, body))


def setup(mounts: Mounts) -> None:
    client = mounts.client
    add_route(client, "POST", "/keys/upload", upload_keys, prefixes=PREFIXES)
    add_route(client, "POST", "/keys/upload/{deviceId}", upload_keys, prefixes=("/r0",))
    add_route(client, "POST", "/keys/query", query_keys, prefixes=PREFIXES)
    add_route(client, "POST", "/keys/claim", claim_keys, prefixes=PREFIXES)
    add_route(client, "GET", "/keys/changes", key_changes, prefixes=PREFIXES)
    add_route(
        client, "POST", "/keys/device_signing/upload", upload_device_signing, prefixes=PREFIXES
    )
    add_route(client, "POST", "/keys/signatures/upload", upload_signatures, prefixes=PREFIXES)
