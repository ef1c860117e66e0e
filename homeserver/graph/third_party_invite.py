"""Checking the `signed` block of a third-party invite against the room's public keys.

An invite that redeems an `m.room.third_party_invite` carries
`content.third_party_invite.signed = {mxid, token, signatures}`, signed by the identity
server with the private half of a key published in the `m.room.third_party_invite`
event (`public_key` and/or `public_keys[].public_key`, unpadded base64 in either
alphabet). Any signature by any server name that verifies with any of those keys is
enough: the keys, not the server name, carry the trust.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json

from ..events.event import Event

_ED25519_KEY_LENGTH = 32


def third_party_invite_public_keys(invite_event: Event) -> list[bytes]:
    """The raw Ed25519 public keys published by an m.room.third_party_invite event."""
    content = invite_event.content
    encoded: list[Any] = [content.get("public_key")]
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        encoded.extend(k.get("public_key") for k in public_keys if isinstance(k, dict))
    keys: list[bytes] = []
    for value in encoded:
        raw = _decode_unpadded_base64(value)
        if raw is not None and len(raw) == _ED25519_KEY_LENGTH and raw not in keys:
            keys.append(raw)
    return keys


def public_key_bytes(value: Any) -> bytes | None:
    """One published `public_key` as a raw Ed25519 key, or None if it is not one."""
    raw = _decode_unpadded_base64(value)
    return raw if raw is not None and len(raw) == _ED25519_KEY_LENGTH else None


def signed_block_is_valid(signed: dict[str, Any], public_keys: list[bytes]) -> bool:
    """True if any signature in `signed` verifies with any of `public_keys`."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    for server_name, by_key_id in signatures.items():
        if not isinstance(by_key_id, dict):
            continue
        for key_id in by_key_id:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            for raw in public_keys:
                verify_key = decode_verify_key_bytes(key_id, raw)
                try:
                    verify_signed_json(signed, server_name, verify_key)
                except (SignatureVerifyException, TypeError, ValueError):
                    continue
                return True
    return False


def _decode_unpadded_base64(value: Any) -> bytes | None:
    """Decode standard or URL-safe base64, padded or not; None if it is not base64."""
    if not isinstance(value, str) or not value:
        return None
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
