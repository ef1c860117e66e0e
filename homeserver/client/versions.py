"""GET /_matrix/client/versions: the spec versions we implement (no auth required)."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import Mounts
from homeserver.http import json_response

# Client-server API versions whose required endpoints we serve. Clients pick features
# from this list, so only list what is really implemented.
SUPPORTED_VERSIONS = tuple(f"v1.{minor}" for minor in range(1, 13))


async def get_versions(request: web.Request) -> web.Response:
    return json_response({"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}})


def setup(mounts: Mounts) -> None:
    mounts.client.router.add_get("/versions", get_versions)
