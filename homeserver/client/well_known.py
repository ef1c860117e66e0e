"""/.well-known/matrix/client, /server (server discovery) and /support (spec v1.10).

Served only when configured: the client document needs a base URL (well_known_client
or public_baseurl), the server document needs `serve_server_wellknown: true`. The
support document comes from the `support` section; without it the answer is the spec's
404 (M_NOT_FOUND, not M_UNRECOGNIZED: the endpoint exists, the information does not).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import CONFIG, Mounts
from homeserver.errors import not_found
from homeserver.http import json_response
from homeserver.ids import split_server_name


async def get_client_well_known(request: web.Request) -> web.Response:
    base_url = request.config_dict[CONFIG].well_known.client_base_url
    return json_response({"m.homeserver": {"base_url": base_url}})


async def get_server_well_known(request: web.Request) -> web.Response:
    # Whoever serves https://<server_name>/.well-known reaches us on 443 (not 8448).
    host, port = split_server_name(request.config_dict[CONFIG].server_name)
    return json_response({"m.server": f"{host}:{port or 443}"})


async def get_support_well_known(request: web.Request) -> web.Response:
    support = request.config_dict[CONFIG].well_known.support
    if support is None:
        raise not_found("No support information is configured for this server")
    body: dict[str, Any] = {}
    if support.contacts:
        body["contacts"] = [
            {
                "role": c.role,
                **({"matrix_id": c.matrix_id} if c.matrix_id else {}),
                **({"email_address": c.email_address} if c.email_address else {}),
            }
            for c in support.contacts
        ]
    if support.support_page:
        body["support_page"] = support.support_page
    return json_response(body)


def setup(mounts: Mounts) -> None:
    if mounts.config.well_known.client_base_url:
        mounts.well_known.router.add_get("/client", get_client_well_known)
    if mounts.config.well_known.serve_server_wellknown:
        mounts.well_known.router.add_get("/server", get_server_well_known)
    mounts.well_known.router.add_get("/support", get_support_well_known)
