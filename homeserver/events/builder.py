"""Build a complete, hashed and signed PDU in the format of a room version.

The rooms service decides *what* goes into an event (prev/auth events, depth); this
module only knows how each room version lays it out on the wire:

- v1/v2: `event_id` = `$<random>:<server>` inside the event; prev/auth edges are
  `[event_id, {"sha256": <reference hash>}]` pairs (`{}` when the hash is not known,
  which is what Synapse sends for edges it has no hash for);
- v3+: edges are plain event IDs and the event ID is the reference hash;
- redactions: top-level `redacts` before v11, `content.redacts` from v11 (Synapse
  emits only the content key in v11+; clients get a top-level copy at serialisation);
- v12: the create event has no `room_id` (the room ID is derived from its hash).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .event import Event
from .hashing import add_content_hash, compute_reference_hash, unpadded_b64
from .room_versions import RoomVersion
from .signing import SigningKey, sign_event
from .validation import EventFormatError, validate_pdu_format


def edge_hash(event: Event) -> str:
    """The reference hash a v1/v2 event is cited with in other events' edges."""
    return unpadded_b64(compute_reference_hash(event.pdu, event.room_version))


def _v1_event_id(server_name: str) -> str:
    return f"${secrets.token_urlsafe(12)}:{server_name}"


def _edges(
    event_ids: Sequence[str], room_version: RoomVersion, edge_hashes: Mapping[str, str] | None
) -> list[Any]:
    if not room_version.event_id_in_event:
        return list(event_ids)
    hashes = edge_hashes or {}
    return [[eid, {"sha256": hashes[eid]} if eid in hashes else {}] for eid in event_ids]


def build_event(
    room_version: RoomVersion,
    *,
    room_id: str | None,
    sender: str,
    type: str,
    content: Mapping[str, Any],
    state_key: str | None = None,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    redacts: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
    server_name: str,
    signing_key: SigningKey,
    edge_hashes: Mapping[str, str] | None = None,
) -> Event:
    """A new event: laid out for the version, content-hashed, signed, format-checked.

    `room_id` must be None exactly for a v12 create event. Raises EventFormatError if
    the result is not a valid PDU (too large, bad IDs, too many edges...).
    """
    is_create = type == "m.room.create" and state_key == ""
    if room_version.room_id_is_create_event_id and is_create:
        if room_id is not None:
            raise EventFormatError("a v12 create event has no room_id")
    elif room_id is None:
        raise EventFormatError("room_id is required")

    content = dict(content)
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": content,
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": _edges(prev_event_ids, room_version, edge_hashes),
        "auth_events": _edges(auth_event_ids, room_version, edge_hashes),
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redaction_rules >= 11:
            content["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if room_version.event_id_in_event:
        pdu["event_id"] = _v1_event_id(server_name)

    add_content_hash(pdu)
    sign_event(pdu, room_version, server_name, signing_key)
    if unsigned:
        pdu["unsigned"] = dict(unsigned)
    validate_pdu_format(pdu, room_version)
    return Event(pdu, room_version)
