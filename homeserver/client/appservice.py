"""POST /_matrix/client/v1/appservice/{appserviceId}/ping (spec v1.7): an appservice
checks that we can reach it (mautrix bridges refuse to start if this fails)."""

from __future__ import annotations

from aiohttp import web

from homeserver.appservice.sender import PingError
from homeserver.appstate import APP_SERVICE_SENDER, APP_SERVICES, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.validate import optional_str
from homeserver.errors import MatrixError, forbidden
from homeserver.http import json_response, path_param, read_json_body


async def ping(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    service_id = str(path_param(request, "appservice_id"))
    services = request.config_dict.get(APP_SERVICES)
    service = services.by_id(service_id) if services else None
    if service is None or requester.app_service_id != service.id:
        raise forbidden("Only the appservice itself may ping it")
    body = await read_json_body(request, allow_empty=True)
    transaction_id = optional_str(body, "transaction_id", max_len=255)
    try:
        took = await request.config_dict[APP_SERVICE_SENDER].ping(service, transaction_id)
    except PingError as e:
        upstream = {"status": e.upstream, "body": e.body} if e.upstream is not None else {}
        raise MatrixError(e.status, e.errcode, str(e), **upstream) from None
    return json_response({"duration_ms": took})


def setup(mounts: Mounts) -> None:
    mounts.client.router.add_post("/v1/appservice/{appservice_id}/ping", ping)
