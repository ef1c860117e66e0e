"""Format checks for a PDU before anything else trusts it (server-server API PDU schemas
per room version; client-server API "Size limits"; rooms/v6 canonical JSON; rooms/v12).

`validate_pdu_format` answers one question: is this dict shaped like an event of this
room version? It runs on events we receive and on events we build, so that `Event`
accessors can assume the types are right. It deliberately does not check content
semantics (membership values, power levels...): a redacted copy of a valid event must
still pass, and those rules belong to the auth rules.
"""

from __future__ import annotations

import re
from typing import Any

from ..ids import parse_user_id, split_server_name, validate_event_id, validate_room_id
from .canonical import CanonicalJsonError, check_strict_json, encode_canonical_json
from .room_versions import EventIdFormat, RoomVersion

MAX_PDU_SIZE = 65536
MAX_KEY_BYTES = 255
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH = 2**63 - 1

# A reference hash is 32 bytes: 43 characters of unpadded base64.
_V3_EVENT_ID = re.compile(r"^\$[A-Za-z0-9+/]{43}$")
_V4_EVENT_ID = re.compile(r"^\$[A-Za-z0-9_\-]{43}$")
_V12_ROOM_ID = re.compile(r"^![A-Za-z0-9_\-]{43}$")


class EventFormatError(ValueError):
    """The PDU is not a well-formed event of its room version; str() says why."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _require(pdu: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in pdu:
        raise EventFormatError(f"missing '{key}'")
    value = pdu[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        raise EventFormatError(f"'{key}' must be {what}")
    return value


def _check_short_string(pdu: dict[str, Any], key: str) -> None:
    if _utf8_len(pdu[key]) > MAX_KEY_BYTES:
        raise EventFormatError(f"'{key}' is longer than {MAX_KEY_BYTES} bytes")


def _check_event_id(value: Any, room_version: RoomVersion, where: str) -> None:
    """Event IDs in the shape of the version: `$opaque:server` or `$` + reference hash."""
    try:
        validate_event_id(value)
    except ValueError as e:
        raise EventFormatError(f"{where}: {e}") from None
    fmt = room_version.event_id_format
    if fmt == EventIdFormat.V1:
        _, sep, server = value.partition(":")
        try:
            if not sep:
                raise ValueError("no server name")
            split_server_name(server)
        except ValueError as e:
            raise EventFormatError(f"{where}: event ID {value!r} is malformed: {e}") from None
    elif fmt == EventIdFormat.V3 and not _V3_EVENT_ID.match(value):
        raise EventFormatError(f"{where}: {value!r} is not a room v3 event ID")
    elif fmt == EventIdFormat.V4 and not _V4_EVENT_ID.match(value):
        raise EventFormatError(f"{where}: {value!r} is not a room v4+ event ID")


def _check_edges(pdu: dict[str, Any], key: str, limit: int, room_version: RoomVersion) -> list[str]:
    """prev_events / auth_events: `[id, {alg: hash}]` pairs in v1/v2, plain IDs from v3."""
    edges = _require(pdu, key, list, "a list")
    if len(edges) > limit:
        raise EventFormatError(f"'{key}' has more than {limit} entries")
    ids: list[str] = []
    for i, edge in enumerate(edges):
        where = f"{key}[{i}]"
        if room_version.event_id_in_event:
            if not (isinstance(edge, list) and len(edge) == 2 and isinstance(edge[1], dict)):
                raise EventFormatError(f"{where} must be an [event_id, hashes] pair")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in edge[1].items()):
                raise EventFormatError(f"{where}: hashes must map algorithm to string")
            edge = edge[0]
        _check_event_id(edge, room_version, where)
        ids.append(edge)
    return ids


def _check_hashes_and_signatures(pdu: dict[str, Any]) -> None:
    hashes = _require(pdu, "hashes", dict, "an object")
    if not isinstance(hashes.get("sha256"), str):
        raise EventFormatError("'hashes' must contain a string 'sha256'")
    signatures = _require(pdu, "signatures", dict, "an object")
    for server, sigs in signatures.items():
        if not isinstance(sigs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in sigs.items()
        ):
            raise EventFormatError(f"'signatures.{server}' must map key IDs to strings")


def _check_room_id(pdu: dict[str, Any], room_version: RoomVersion, is_create: bool) -> None:
    if room_version.room_id_is_create_event_id and is_create:
        if "room_id" in pdu:
            raise EventFormatError("an m.room.create event must not have a 'room_id' here")
        return
    room_id = _require(pdu, "room_id", str, "a string")
    try:
        validate_room_id(room_id)
    except ValueError as e:
        raise EventFormatError(f"'room_id': {e}") from None
    if room_version.room_id_is_create_event_id:
        if not _V12_ROOM_ID.match(room_id):
            raise EventFormatError("'room_id' must be '!' + the create event's reference hash")
    elif ":" not in room_id:
        raise EventFormatError("'room_id' must contain a server name in this room version")


def validate_pdu_format(pdu: dict[str, Any], room_version: RoomVersion) -> None:
    """Raise EventFormatError unless `pdu` is a well-formed event of `room_version`.

    The size limit is measured without `unsigned`, which is not part of the signed event
    and which relays may grow (e.g. `invite_room_state`).
    """
    if not isinstance(pdu, dict):
        raise EventFormatError("event must be a JSON object")

    if room_version.strict_canonical_json:
        try:
            check_strict_json(pdu)
        except CanonicalJsonError as e:
            raise EventFormatError(f"not canonical JSON: {e}") from None

    sized = {k: v for k, v in pdu.items() if k != "unsigned"}
    try:
        size = len(encode_canonical_json(sized))
    except (TypeError, ValueError) as e:
        raise EventFormatError(f"not encodable as JSON: {e}") from None
    if size > MAX_PDU_SIZE:
        raise EventFormatError(f"event is {size} bytes, more than {MAX_PDU_SIZE}")

    event_type = _require(pdu, "type", str, "a string")
    _check_short_string(pdu, "type")

    sender = _require(pdu, "sender", str, "a string")
    try:
        parse_user_id(sender)
    except ValueError as e:
        raise EventFormatError(f"'sender': {e}") from None

    if "state_key" in pdu:
        _require(pdu, "state_key", str, "a string")
        _check_short_string(pdu, "state_key")
    is_create = event_type == "m.room.create" and pdu.get("state_key") == ""
    _check_room_id(pdu, room_version, is_create)

    _require(pdu, "content", dict, "an object")
    depth = _require(pdu, "depth", int, "an integer")
    if not 0 <= depth <= MAX_DEPTH:
        raise EventFormatError("'depth' is out of range")
    _require(pdu, "origin_server_ts", int, "an integer")
    if "unsigned" in pdu:
        _require(pdu, "unsigned", dict, "an object")
    if "origin" in pdu:
        _require(pdu, "origin", str, "a string")
    if "redacts" in pdu:
        _require(pdu, "redacts", str, "a string")

    if room_version.event_id_in_event:
        _check_event_id(_require(pdu, "event_id", str, "a string"), room_version, "'event_id'")

    _check_edges(pdu, "prev_events", MAX_PREV_EVENTS, room_version)
    auth_ids = _check_edges(pdu, "auth_events", MAX_AUTH_EVENTS, room_version)
    if room_version.room_id_is_create_event_id and not is_create:
        create_id = "$" + pdu["room_id"][1:]
        if create_id in auth_ids:
            raise EventFormatError("'auth_events' must not list the create event")

    _check_hashes_and_signatures(pdu)
