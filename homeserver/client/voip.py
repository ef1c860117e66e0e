"""GET /voip/turnServer: credentials for the operator's TURN server (coturn), which
Element's 1:1 calls relay through when the two ends cannot reach each other.

With `turn_shared_secret` (coturn's `use-auth-secret` and `static-auth-secret`), each
user gets credentials that expire after `turn_user_lifetime`: the username is
"<expiry in seconds>:<user ID>" and the password its HMAC-SHA1 under the secret, in
padded base64 (the TURN REST API scheme coturn checks); with `turn_username` and
`turn_password`, everyone gets those. Without TURN configured the answer is `{}`, as
Synapse's, and clients fall back to their own defaults.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from aiohttp import web

from homeserver.appstate import CONFIG
from homeserver.client.auth import get_requester
from homeserver.config.accounts_model import TurnConfig
from homeserver.errors import MatrixError
from homeserver.http import json_response


def turn_credentials(config: TurnConfig, user_id: str, now_ms: int) -> dict[str, Any]:
    if not config.uris:
        return {}
    if config.shared_secret:
        username = f"{(now_ms + config.user_lifetime_ms) // 1000}:{user_id}"
        mac = hmac.new(config.shared_secret.encode(), username.encode(), hashlib.sha1)
        password = base64.b64encode(mac.digest()).decode("ascii")
    elif config.username and config.password:
        username, password = config.username, config.password
    else:
        return {}
    return {
        "username": username,
        "password": password,
        "uris": list(config.uris),
        "ttl": config.user_lifetime_ms // 1000,
    }


async def get_turn_server(request: web.Request) -> web.Response:
    requester = await get_requester(request, allow_guest=True)
    config = request.config_dict[CONFIG].turn
    if requester.is_guest and not config.allow_guests:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may not use the TURN server")
    return json_response(turn_credentials(config, requester.user_id, int(time.time() * 1000)))
