"""GET /capabilities (capabilities.yaml): what this server lets the user do.

Every value here must be true of the server: clients hide features we flag off and
try features we flag on.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import CONFIG, STORES, Mounts
from homeserver.client.auth import get_requester
from homeserver.config import Config
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.http import json_response


def capabilities(config: Config) -> dict[str, Any]:
    """The capability map (the same for every user: there is no per-user policy yet)."""
    return {
        "m.room_versions": {
            "default": config.default_room_version,
            "available": {version: "stable" for version in KNOWN_ROOM_VERSIONS},
        },
        "m.change_password": {"enabled": config.passwords.enabled},
        "m.set_displayname": {"enabled": config.set_displayname},
        "m.set_avatar_url": {"enabled": config.set_avatar_url},
        # Adding an address needs mail: on with an `email` section (and
        # enable_3pid_changes, on by default as in Synapse).
        "m.3pid_changes": {
            "enabled": config.threepids.email is not None and config.threepids.changes_enabled
        },
        "m.get_login_token": {"enabled": True},
        # Every field may be set, within the spec's key grammar and 64 KiB per profile.
        "m.profile_fields": {"enabled": True},
        "m.forget_forced_upon_leave": {"enabled": False},
    }


async def get_capabilities(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    found = capabilities(request.config_dict[CONFIG])
    user = await request.config_dict[STORES].accounts.get_user(requester.user_id)
    if user is not None and user.is_admin:
        # v1.18: server admins may suspend and lock accounts (/admin/suspend, /admin/lock).
        found["m.account_moderation"] = {"suspend": True, "lock": True}
    return json_response({"capabilities": found})


def setup(mounts: Mounts) -> None:
    for prefix in ("/v3", "/r0"):
        mounts.client.router.add_get(prefix + "/capabilities", get_capabilities)
