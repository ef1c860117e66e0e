"""Server ACLs (`m.room.server_acl`): which servers may take part in a room.

Spec (client-server API, "Server Access Control Lists"): a server name (without port,
compared case-insensitively) is denied if it is an IP literal and `allow_ip_literals` is
false, if it matches any `deny` glob, or if it matches no `allow` glob (an absent
`allow` allows nothing). Globs use `*` (any run) and `?` (one character). Enforced on
every inbound request that touches a room, and per PDU / EDU of a /send transaction.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from homeserver.errors import MatrixError
from homeserver.storage import Stores

ACL_TYPE = "m.room.server_acl"


@lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in glob)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _host_of(server_name: str) -> str:
    """The host part of a server name: `[::1]:8448` -> `::1`, `a.b:80` -> `a.b`."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[1:end] if end > 0 else server_name
    host, sep, _port = server_name.rpartition(":")
    if not sep:
        return server_name
    return host or server_name


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _globs(content: Mapping[str, Any], key: str) -> list[str]:
    value = content.get(key)
    if not isinstance(value, list):
        return []
    return [g for g in value if isinstance(g, str)]


def server_allowed(acl_content: Mapping[str, Any] | None, server_name: str) -> bool:
    """Whether `server_name` passes the ACL whose event content is `acl_content`
    (None: the room has no ACL, everyone is allowed)."""
    if acl_content is None:
        return True
    host = _host_of(server_name)
    allow_ip = acl_content.get("allow_ip_literals", True)
    if not isinstance(allow_ip, bool):
        allow_ip = True
    if not allow_ip and _is_ip_literal(host):
        return False
    if any(_glob_regex(g).fullmatch(host) for g in _globs(acl_content, "deny")):
        return False
    return any(_glob_regex(g).fullmatch(host) for g in _globs(acl_content, "allow"))


async def room_acl(stores: Stores, room_id: str) -> Mapping[str, Any] | None:
    """The content of the room's current ACL event, or None if it has none."""
    event_id = await stores.current_state.get_current_state_event_id(room_id, ACL_TYPE, "")
    if event_id is None:
        return None
    event = await stores.events.get_event(event_id)
    return None if event is None else event.content


async def check_server_acl(stores: Stores, room_id: str, server_name: str) -> None:
    """Raise 403 M_FORBIDDEN if the room's ACL denies `server_name`."""
    if not server_allowed(await room_acl(stores, room_id), server_name):
        raise MatrixError(403, "M_FORBIDDEN", "Server is banned from this room")
