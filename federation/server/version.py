"""GET /_matrix/federation/v1/version (unauthenticated)."""

from __future__ import annotations

from aiohttp import web

from homeserver import __version__
from homeserver.http import json_response

SERVER_NAME = "homeserver-py"
SERVER_VERSION = __version__


async def get_version(request: web.Request) -> web.Response:
    return json_response({"server": {"name": SERVER_NAME, "version": SERVER_VERSION}})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/version", get_version)
