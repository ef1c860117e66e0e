"""Matrix identifier grammar (appendices: identifier grammar).

One place validates every ID that enters from a path, a body or a peer, so handlers can
trust what they hold. Functions raise `ValueError` with a readable reason; the HTTP
edge turns that into `M_INVALID_PARAM` / `M_BAD_JSON`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NewType

UserID = NewType("UserID", str)
RoomID = NewType("RoomID", str)
EventID = NewType("EventID", str)
RoomAlias = NewType("RoomAlias", str)
ServerName = NewType("ServerName", str)

MAX_ID_LENGTH = 255

_DNS_NAME = re.compile(r"^[A-Za-z0-9\-.]{1,255}$")
_IPV4 = re.compile(r"^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$")
_PORT = re.compile(r"^[0-9]{1,5}$")
# Localparts we hand out: the spec's current grammar.
_NEW_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")
# Historical localparts still accepted from other servers: any printable ASCII but ':'.
_HISTORICAL_LOCALPART = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


def split_server_name(name: str) -> tuple[str, int | None]:
    """Split `host[:port]` into (host, port); raise ValueError if not a valid server name.

    IPv6 literals keep their brackets in the host so the result can be re-joined as is.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_ID_LENGTH:
        raise ValueError("server name must be 1 to 255 characters")
    if name.startswith("["):
        end = name.find("]")
        if end == -1:
            raise ValueError("unterminated IPv6 literal in server name")
        host, rest = name[: end + 1], name[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("invalid IPv6 literal in server name") from None
    else:
        host, sep, port_s = name.partition(":")
        rest = sep + port_s
        if not _DNS_NAME.match(host) or host.startswith(".") or ".." in host:
            raise ValueError("invalid host in server name")
        if _IPV4.match(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError("invalid IPv4 literal in server name") from None
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not _PORT.match(rest[1:]):
            raise ValueError("invalid port in server name")
        port = int(rest[1:])
        if not 0 < port < 65536:
            raise ValueError("port out of range in server name")
    return host, port


def is_valid_server_name(name: object) -> bool:
    try:
        split_server_name(name)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _split_sigil_id(value: object, sigil: str, what: str) -> tuple[str, str]:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
        raise ValueError(f"{what} is longer than 255 bytes")
    if not value.startswith(sigil):
        raise ValueError(f"{what} must start with {sigil!r}")
    local, sep, server = value[1:].partition(":")
    if not sep:
        raise ValueError(f"{what} must contain a server name")
    if not local:
        raise ValueError(f"{what} has an empty localpart")
    split_server_name(server)
    return local, server


def parse_user_id(value: object) -> tuple[str, str]:
    """Return (localpart, server_name) of a user ID, accepting historical localparts."""
    local, server = _split_sigil_id(value, "@", "user ID")
    if not _HISTORICAL_LOCALPART.match(local):
        raise ValueError("user ID localpart has invalid characters")
    return local, server


def validate_user_id(value: object) -> UserID:
    parse_user_id(value)
    return UserID(value)  # type: ignore[arg-type]


def is_valid_user_id(value: object) -> bool:
    try:
        parse_user_id(value)
    except ValueError:
        return False
    return True


def check_new_localpart(localpart: str) -> None:
    """Localparts for accounts we create: lower-case grammar only."""
    if not localpart or not _NEW_LOCALPART.match(localpart):
        raise ValueError("User ID can only contain characters a-z, 0-9, or '._=-/+'")


def validate_room_alias(value: object) -> RoomAlias:
    local, _ = _split_sigil_id(value, "#", "room alias")
    if any(ord(c) < 0x20 or c in " \x7f" for c in local):
        raise ValueError("room alias has invalid characters")
    return RoomAlias(value)  # type: ignore[arg-type]


def validate_room_id(value: object) -> RoomID:
    """Room IDs are opaque; v12 room IDs have no server part (`!` + reference hash)."""
    if not isinstance(value, str) or not value.startswith("!") or len(value) < 2:
        raise ValueError("room ID must be a string starting with '!'")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
        raise ValueError("room ID is longer than 255 bytes")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ValueError("room ID has invalid characters")
    if ":" in value:
        local, _, server = value[1:].partition(":")
        if not local:
            raise ValueError("room ID has an empty opaque part")
        split_server_name(server)
    return RoomID(value)


def validate_event_id(value: object) -> EventID:
    if not isinstance(value, str) or not value.startswith("$") or len(value) < 2:
        raise ValueError("event ID must be a string starting with '$'")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
        raise ValueError("event ID is longer than 255 bytes")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ValueError("event ID has invalid characters")
    return EventID(value)


def server_of(identifier: str) -> str | None:
    """The server part of a user ID, alias, v1–v11 room ID or v1–v2 event ID, if any."""
    _, sep, server = identifier.partition(":")
    return server if sep else None
