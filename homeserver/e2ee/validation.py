"""Shape and signature checks for uploaded E2EE objects (pure: no I/O).

Every check raises a 400 MatrixError naming the offending field, so untrusted JSON never
reaches storage in a shape the rest of the code would trip over.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json

from homeserver.errors import MatrixError, bad_json, invalid_param

MAX_ID_LENGTH = 255
MAX_KEYS_PER_UPLOAD = 1000


def invalid_signature(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_SIGNATURE", message)


def require_dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json(f"{name} must be an object")
    return value


def optional_dict(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    return None if value is None else require_dict(value, key)


def require_str(value: Any, name: str, max_len: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value:
        raise bad_json(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise bad_json(f"{name} is too long")
    return value


def require_str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"{name} must be a list of strings")
    return value


def require_int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_json(f"{name} must be an integer >= {minimum}")
    if value > 2**53:
        raise bad_json(f"{name} is too large")
    return value


def optional_timeout(body: dict[str, Any]) -> int:
    value = body.get("timeout", 10_000)
    return require_int(value, "timeout") if value is not None else 10_000


def split_key_id(key_id: str, name: str) -> tuple[str, str]:
    """ "<algorithm>:<id>" -> (algorithm, id)."""
    algorithm, sep, ident = key_id.partition(":")
    if not sep or not algorithm or not ident or len(key_id) > MAX_ID_LENGTH:
        raise bad_json(f"{name}: key ID {key_id[:80]!r} is not '<algorithm>:<id>'")
    return algorithm, ident


def check_signatures_shape(obj: dict[str, Any], name: str) -> None:
    sigs = obj.get("signatures", {})
    if not isinstance(sigs, dict):
        raise bad_json(f"{name}.signatures must be an object")
    for user_sigs in sigs.values():
        if not isinstance(user_sigs, dict) or not all(
            isinstance(v, str) for v in user_sigs.values()
        ):
            raise bad_json(f"{name}.signatures must map user IDs to key ID -> signature")


def decode_unpadded_base64(text: str) -> bytes:
    """Matrix's unpadded base64 (standard alphabet; URL-safe accepted too)."""
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64") from exc


def verify_ed25519(obj: dict[str, Any], signer: str, key_id: str, public_key: str) -> bool:
    """Whether `obj` carries a valid signature by `signer` with ed25519 `public_key`."""
    try:
        verify_key = decode_verify_key_bytes(key_id, decode_unpadded_base64(public_key))
        verify_signed_json(obj, signer, verify_key)
    except (SignatureVerifyException, ValueError, TypeError, KeyError, AttributeError):
        return False
    except Exception:  # nacl raises its own types for malformed keys
        return False
    return True


def validate_device_keys(keys: Any, user_id: str, device_id: str) -> dict[str, Any]:
    """The `device_keys` of /keys/upload: ours and well-formed."""
    keys = require_dict(keys, "device_keys")
    if keys.get("user_id") != user_id:
        raise invalid_param("device_keys.user_id does not match the authenticated user")
    if keys.get("device_id") != device_id:
        raise invalid_param("device_keys.device_id does not match the authenticated device")
    require_str_list(keys.get("algorithms"), "device_keys.algorithms")
    key_map = require_dict(keys.get("keys"), "device_keys.keys")
    for key_id, value in key_map.items():
        split_key_id(key_id, "device_keys.keys")
        require_str(value, f"device_keys.keys.{key_id}", max_len=1024)
    if "signatures" in keys:
        check_signatures_shape(keys, "device_keys")
    if "unsigned" in keys:
        require_dict(keys["unsigned"], "device_keys.unsigned")
    # The self-signature is not verified: as Synapse, the server only stores device
    # keys; clients verify them (and refuse a device whose signature is wrong).
    stored = dict(keys)
    stored.pop("unsigned", None)
    return stored


def validate_key_map(keys: Any, name: str) -> list[tuple[str, str, Any]]:
    """one_time_keys / fallback_keys: {"<alg>:<id>": str | signed object} -> rows."""
    keys = require_dict(keys, name)
    if len(keys) > MAX_KEYS_PER_UPLOAD:
        raise bad_json(f"{name}: too many keys in one upload")
    rows: list[tuple[str, str, Any]] = []
    for key_id, value in keys.items():
        algorithm, ident = split_key_id(key_id, name)
        if isinstance(value, str):
            require_str(value, f"{name}.{key_id}", max_len=1024)
        elif isinstance(value, dict):
            if not isinstance(value.get("key"), str):
                raise bad_json(f"{name}.{key_id}.key must be a string")
            check_signatures_shape(value, f"{name}.{key_id}")
        else:
            raise bad_json(f"{name}.{key_id} must be a string or an object")
        rows.append((algorithm, ident, value))
    return rows


def cross_signing_public_key(key: Any, name: str, user_id: str, usage: str) -> str:
    """Check a cross-signing key object and return its ed25519 public key."""
    key = require_dict(key, name)
    if key.get("user_id") != user_id:
        raise invalid_param(f"{name}.user_id does not match the authenticated user")
    usages = require_str_list(key.get("usage"), f"{name}.usage")
    if usage not in usages:
        raise invalid_param(f"{name}.usage must contain {usage!r}")
    key_map = require_dict(key.get("keys"), f"{name}.keys")
    if len(key_map) != 1:
        raise invalid_param(f"{name}.keys must contain exactly one key")
    ((key_id, public_key),) = key_map.items()
    algorithm, ident = split_key_id(key_id, f"{name}.keys")
    require_str(public_key, f"{name}.keys.{key_id}", max_len=1024)
    if algorithm != "ed25519" or ident != public_key:
        raise invalid_param(f"{name}.keys must be 'ed25519:<public key>': <public key>")
    check_signatures_shape(key, name)
    return public_key


def strip_signatures(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
