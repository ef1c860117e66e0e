"""Signing and verifying events and JSON objects (appendices: "Signing JSON";
server-server API: "Signing events", "Validating hashes and signatures on received events").

All cryptography goes through signedjson and nacl; this module only decides *what* is
signed (the redacted event for PDUs, the object minus `signatures`/`unsigned` for
everything else) and *who* must have signed it. Key handling helpers live here too, so
the federation key code and the config loader share one encoding of keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from signedjson.key import (
    decode_signing_key_base64,
    encode_signing_key_base64,
    encode_verify_key_base64,
    get_verify_key,
    is_signing_algorithm_supported,
)
from signedjson.key import decode_verify_key_base64 as _decode_verify_key_base64
from signedjson.key import generate_signing_key as _generate_signing_key
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from signedjson.types import SigningKey, VerifyKey

from .event import Event
from .redaction import redact
from .room_versions import RoomVersion

__all__ = [
    "SignatureError",
    "SigningKey",
    "VerifyKey",
    "decode_verify_key_base64",
    "encode_verify_key_base64",
    "generate_signing_key",
    "get_verify_key",
    "key_id_of",
    "read_signing_keys",
    "required_signers",
    "sign_event",
    "sign_json_object",
    "signing_key_from_seed",
    "verify_event_signature",
    "verify_event_signatures",
    "verify_json_signature",
    "write_signing_keys",
]

ED25519 = "ed25519"


class SignatureError(ValueError):
    """An event or object lacks a required, valid signature."""


# --- keys -----------------------------------------------------------------------------


def key_id_of(key: SigningKey | VerifyKey) -> str:
    """`<algorithm>:<version>`, the name a key's signatures are filed under."""
    return f"{key.alg}:{key.version}"


def generate_signing_key(version: str) -> SigningKey:
    """A fresh ed25519 signing key with the given version (the part after `ed25519:`)."""
    return _generate_signing_key(version)


def signing_key_from_seed(seed_b64: str, version: str) -> SigningKey:
    """An ed25519 signing key from its unpadded-base64 32-byte seed."""
    return decode_signing_key_base64(ED25519, version, seed_b64)


def decode_verify_key_base64(key_id: str, key_b64: str) -> VerifyKey:
    """A verify key from a key ID (`ed25519:abc`) and its unpadded-base64 public key.

    Raises ValueError for an unsupported algorithm or a malformed key.
    """
    algorithm, sep, version = key_id.partition(":")
    if not sep or not version:
        raise ValueError(f"malformed key ID {key_id!r}")
    if algorithm != ED25519:
        raise ValueError(f"unsupported key algorithm {algorithm!r}")
    try:
        return _decode_verify_key_base64(algorithm, version, key_b64)
    except Exception as e:  # binascii.Error, nacl ValueError/TypeError
        raise ValueError(f"malformed verify key for {key_id}: {e}") from None


def read_signing_keys(text: str) -> list[SigningKey]:
    """Parse Synapse's signing key file: one `ed25519 <version> <base64 seed>` per line.

    Blank lines are skipped; anything else malformed raises ValueError.
    """
    keys: list[SigningKey] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"signing key line {lineno}: expected '<alg> <version> <seed>'")
        algorithm, version, seed = parts
        if algorithm != ED25519:
            raise ValueError(f"signing key line {lineno}: unsupported algorithm {algorithm!r}")
        try:
            keys.append(decode_signing_key_base64(algorithm, version, seed))
        except Exception as e:
            raise ValueError(f"signing key line {lineno}: {e}") from None
    return keys


def write_signing_keys(keys: Iterable[SigningKey]) -> str:
    """The inverse of read_signing_keys (Synapse-compatible file contents)."""
    return "".join(f"{k.alg} {k.version} {encode_signing_key_base64(k)}\n" for k in keys)


# --- plain JSON objects (key documents, X-Matrix requests) ----------------------------


def sign_json_object(
    obj: dict[str, Any], server_name: str, signing_key: SigningKey
) -> dict[str, Any]:
    """Add `signatures[server_name][key_id]` to `obj` in place and return it.

    The signature covers the canonical JSON of the object without `signatures` and
    `unsigned`; existing signatures (from other servers or keys) are kept.
    """
    return sign_json(obj, server_name, signing_key)


def verify_json_signature(obj: dict[str, Any], server_name: str, verify_key: VerifyKey) -> bool:
    """True if `obj` carries a valid signature by `server_name` with this key."""
    try:
        verify_signed_json(obj, server_name, verify_key)
    except (SignatureVerifyException, KeyError, TypeError, AttributeError):
        return False
    return True


# --- events ---------------------------------------------------------------------------


def _signable_event(pdu: dict[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """What an event signature covers: the redacted event minus signatures/unsigned."""
    redacted = redact(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return redacted


def sign_event(
    pdu: dict[str, Any], room_version: RoomVersion, server_name: str, signing_key: SigningKey
) -> None:
    """Add `signatures[server_name][key_id]` over the redacted event, in place.

    The content hash must already be set (`hashing.add_content_hash`): it is what ties
    the signature, which only covers the redacted form, to the full content.
    """
    signed = sign_json(_signable_event(pdu, room_version), server_name, signing_key)
    signature = signed["signatures"][server_name][key_id_of(signing_key)]
    signatures = pdu.get("signatures")
    if not isinstance(signatures, dict):
        signatures = pdu["signatures"] = {}
    signatures.setdefault(server_name, {})[key_id_of(signing_key)] = signature


def verify_event_signature(
    pdu: dict[str, Any],
    room_version: RoomVersion,
    server_name: str,
    verify_key: VerifyKey,
    key_id: str | None = None,
) -> bool:
    """True if the PDU has a valid signature by `server_name` under `key_id`.

    `key_id` defaults to the key's own `ed25519:<version>`. Works on the full event or
    an already-redacted copy: both redact to the same bytes.
    """
    signatures = pdu.get("signatures")
    server_sigs = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(server_sigs, dict):
        return False
    signature = server_sigs.get(key_id or key_id_of(verify_key))
    if not isinstance(signature, str):
        return False
    signed = _signable_event(pdu, room_version)
    # Only the one signature being checked, filed where signedjson looks for it.
    signed["signatures"] = {server_name: {key_id_of(verify_key): signature}}
    return verify_json_signature(signed, server_name, verify_key)


def required_signers(event: Event) -> set[str]:
    """The servers whose signatures an event must carry to be accepted.

    - always the sender's server (third-party invites are no exception: the event is
      still created and signed by the sender's server);
    - room v1/v2: also the server named in the event ID, when it differs;
    - v8+ restricted joins: the server of `join_authorised_via_users_server`.
    """
    servers = {event.origin}
    rv = event.room_version
    if rv.event_id_in_event:
        _, sep, server = event.event_id.partition(":")
        if sep and server:
            servers.add(server)
    if rv.restricted_join_rule and event.type == "m.room.member" and event.membership == "join":
        authoriser = event.content.get("join_authorised_via_users_server")
        if isinstance(authoriser, str):
            _, sep, server = authoriser.partition(":")
            if sep and server:
                servers.add(server)
    return servers


def verify_event_signatures(
    event: Event, verify_keys: Mapping[str, Mapping[str, VerifyKey]]
) -> None:
    """Check the signatures of every required signer; raise SignatureError if not OK.

    `verify_keys` maps server name -> key ID -> key, holding only keys the caller trusts
    for this event (fetched, and valid at its origin_server_ts where the version asks).
    Per the spec, signatures by keys we do not know are skipped, but each required
    server needs at least one signature by a known key, and all of those must verify.
    """
    signatures = event.pdu.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("event has no signatures")
    for server in sorted(required_signers(event)):
        server_sigs = signatures.get(server)
        if not isinstance(server_sigs, dict) or not server_sigs:
            raise SignatureError(f"event is not signed by {server}")
        known = verify_keys.get(server, {})
        checked = 0
        for key_id in server_sigs:
            if not is_signing_algorithm_supported(key_id) or key_id not in known:
                continue
            pdu, rv = event.pdu, event.room_version
            if not verify_event_signature(pdu, rv, server, known[key_id], key_id):
                raise SignatureError(f"invalid signature by {server} with {key_id}")
            checked += 1
        if not checked:
            raise SignatureError(f"no signature by a known key of {server}")
