"""GET /_matrix/key/v2/server: publish our signed verify keys (server-server API, "Publishing Keys").

Peers fetch this to verify our events and X-Matrix request signatures. The document is
signed with every current key and valid for `key_refresh_interval` from now.
"""

from __future__ import annotations

from aiohttp import web

from federation.keys import SERVER_KEYS
from homeserver.appstate import Mounts
from homeserver.http import json_response


async def get_server_keys(request: web.Request) -> web.Response:
    document = request.config_dict[SERVER_KEYS].key_document()
    return json_response(document)


def setup(mounts: Mounts) -> None:
    mounts.key.router.add_get("/v2/server", get_server_keys)
    # Deprecated form with a key ID; the spec says servers return all keys anyway.
    mounts.key.router.add_get("/v2/server/{key_id}", get_server_keys)
