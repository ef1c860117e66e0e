"""/.well-known/matrix/client and /.well-known/matrix/server (server discovery).

Served only when configured: the client document needs a base URL (well_known_client
or public_baseurl), the server document needs `serve_server_wellknown: true`.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import CONFIG, Mounts
from homeserver.http import json_response
from homeserver.ids import split_server_name


async def get_client_well_known(request: web.Request) -> web.Response:
    base_url = request.config_dict[CONFIG].well_known.client_base_url
    return json_response({"m.homeserver": {"base_url": base_url}})


async def get_server_well_known(request: web.Request) -> web.Response:
    # Whoever serves https://<server_name>/.well-known reaches us on 443 (not 8448).
    host, port = split_server_name(request.config_dict[CONFIG].server_name)
    return json_response({"m.server": f"{host}:{port or 443}"})


def setup(mounts: Mounts) -> None:
    if mounts.config.well_known.client_base_url:
        mounts.well_known.router.add_get("/client", get_client_well_known)
    if mounts.config.well_known.serve_server_wellknown:
        mounts.well_known.router.add_get("/server", get_server_well_known)
