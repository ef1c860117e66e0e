"""Content hashes, reference hashes and event IDs (server-server API: "Calculating the
content hash", "Calculating the reference hash"; room versions 3+ event ID format)."""

from __future__ import annotations

import hashlib
from base64 import b64encode, urlsafe_b64encode
from typing import Any

from .canonical import encode_canonical_json
from .redaction import redact
from .room_versions import EventIdFormat, RoomVersion


def unpadded_b64(data: bytes) -> str:
    return b64encode(data).decode("ascii").rstrip("=")


def unpadded_urlsafe_b64(data: bytes) -> str:
    return urlsafe_b64encode(data).decode("ascii").rstrip("=")


def compute_content_hash(pdu: dict[str, Any]) -> bytes:
    """SHA-256 over the event without `unsigned`, `signatures` and `hashes`."""
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(pdu: dict[str, Any]) -> None:
    """Set `hashes.sha256` on a PDU being built, in place."""
    pdu["hashes"] = {"sha256": unpadded_b64(compute_content_hash(pdu))}


def check_content_hash(pdu: dict[str, Any]) -> bool:
    """True if the PDU's `hashes.sha256` matches its content."""
    hashes = pdu.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    return hashes["sha256"].rstrip("=") == unpadded_b64(compute_content_hash(pdu))


def compute_reference_hash(pdu: dict[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 over the redacted event without `signatures` and `unsigned`."""
    redacted = redact(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def compute_event_id(pdu: dict[str, Any], room_version: RoomVersion) -> str:
    """The event ID of a PDU in room versions 3+ (v1/v2 events carry their own)."""
    if room_version.event_id_format == EventIdFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("v1/v2 events must carry an event_id")
        return event_id
    digest = compute_reference_hash(pdu, room_version)
    if room_version.event_id_format == EventIdFormat.V3:
        return "$" + unpadded_b64(digest)
    return "$" + unpadded_urlsafe_b64(digest)
