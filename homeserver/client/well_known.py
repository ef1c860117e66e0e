"""/.well-known/matrix/client, /server (server discovery) and /support (spec v1.10);
MatrixRTC's transports (MSC4143), which Element Call finds there or at its endpoint.

Served only when configured: the client document needs a base URL (well_known_client
or public_baseurl), the server document needs `serve_server_wellknown: true`. The
support document comes from the `support` section; without it the answer is the spec's
404 (M_NOT_FOUND, not M_UNRECOGNIZED: the endpoint exists, the information does not).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import CONFIG, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import not_found
from homeserver.http import json_response
from homeserver.ids import split_server_name


async def get_client_well_known(request: web.Request) -> web.Response:
    well_known = request.config_dict[CONFIG].well_known
    body: dict[str, Any] = {"m.homeserver": {"base_url": well_known.client_base_url}}
    if well_known.identity_server is not None:
        body["m.identity_server"] = {"base_url": well_known.identity_server}
    for key, value in well_known.extra_client_content.items():
        body.setdefault(key, value)  # extra_well_known_client_content never replaces ours
    return json_response(body)


async def get_rtc_transports(request: web.Request) -> web.Response:
    """MSC4143: the MatrixRTC backends (e.g. a LiveKit SFU's token service) Element Call
    uses for calls, as configured in `matrix_rtc.transports`; for users only."""
    await get_requester(request)
    transports = request.config_dict[CONFIG].well_known.rtc_transports
    return json_response({"rtc_transports": [dict(t) for t in transports]})


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
    if mounts.config.well_known.rtc_transports:  # else 404 M_UNRECOGNIZED, as Synapse's
        mounts.client.router.add_get(
            "/unstable/org.matrix.msc4143/rtc/transports", get_rtc_transports
        )
