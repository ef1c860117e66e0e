"""Policy Server signatures (spec v1.18, Server-Server API "Policy Servers"): pure.

A room uses a Policy Server when its current state holds a valid `m.room.policy` event
with an empty state key (`via`: a server name; `public_keys.ed25519`: unpadded base64)
and `via` has a joined user. Every other event then needs a signature by `via` under
the key ID `ed25519:policy_server`, made with the key from the state event (not the
server's published key), over the same redacted form as any event signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .room_versions import RoomVersion
from .signing import decode_verify_key_base64, verify_event_signature

POLICY_TYPE = "m.room.policy"
POLICY_KEY_ID = "ed25519:policy_server"


@dataclass(frozen=True)
class PolicyConfig:
    via: str
    ed25519: str  # unpadded base64 public key


def parse_policy(content: Any) -> PolicyConfig | None:
    """The config an `m.room.policy` state event's content names; None if invalid."""
    if not isinstance(content, dict):
        return None
    via, keys = content.get("via"), content.get("public_keys")
    if not isinstance(via, str) or not via or not isinstance(keys, dict):
        return None
    key = keys.get("ed25519")
    if not isinstance(key, str) or not key:
        return None
    return PolicyConfig(via, key)


def needs_policy_signature(event_type: str, state_key: str | None) -> bool:
    """Every event but the policy state event itself (empty state key)."""
    return not (event_type == POLICY_TYPE and state_key == "")


def policy_signature_valid(
    pdu: dict[str, Any], room_version: RoomVersion, config: PolicyConfig
) -> bool:
    """Whether `pdu` carries a valid Policy Server signature for `config`."""
    try:
        key = decode_verify_key_base64(POLICY_KEY_ID, config.ed25519)
    except ValueError:
        return False
    return verify_event_signature(pdu, room_version, config.via, key, POLICY_KEY_ID)
