"""X-Matrix request authentication (server-server API: request authentication).

Every federation request carries an `Authorization: X-Matrix ...` header whose signature
covers a small JSON object: method, the request URI exactly as sent (raw path plus query,
percent-encoding included), origin, destination and, when the request has a body, its
parsed JSON content. Outbound code signs with `sign_request`; inbound code parses with
`parse_x_matrix`, looks up the origin's key (keyring) and checks with `verify_request`.

Pure: no I/O, only canonicaljson / signedjson / nacl.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
from canonicaljson import encode_canonical_json
from signedjson.sign import sign_json

from homeserver.ids import is_valid_server_name

SCHEME = "X-Matrix"


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    """The parameters of one X-Matrix Authorization header.

    `destination` is None when the sender omitted it (allowed for servers older than
    spec v1.3); the receiver then assumes the request was meant for itself.
    """

    origin: str
    destination: str | None
    key_id: str
    signature: str


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any | None
) -> dict[str, Any]:
    """The JSON object an X-Matrix signature covers.

    `content` is left out entirely (not set to null) when the request has no body, which
    is what senders do for GET requests.
    """
    obj: dict[str, Any] = {
        "method": method.upper(),
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def decode_unpadded_base64(value: str) -> bytes:
    """Decode Matrix unpadded base64 (standard alphabet; URL-safe tolerated)."""
    value = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sign_request(
    method: str,
    uri: str,
    origin: str,
    destination: str,
    content: Any | None,
    signing_key: Any,
) -> str:
    """Return the Authorization header value for a request we send.

    `uri` must be the exact raw path and query that goes on the wire; the receiver checks
    the signature against the bytes it sees, so any re-encoding after signing breaks it.
    `signing_key` is a signedjson signing key (nacl SigningKey with `alg`/`version`).
    """
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    key_id = f"{signing_key.alg}:{signing_key.version}"
    sig = signed["signatures"][origin][key_id]
    return (
        f"{SCHEME} origin={_quote(origin)},destination={_quote(destination)},"
        f"key={_quote(key_id)},sig={_quote(sig)}"
    )


def _parse_params(text: str) -> dict[str, str]:
    """Parse RFC 9110 auth-params: `name=value` pairs, values token or quoted-string.

    Lenient where senders have been sloppy in the wild (whitespace around `=` and
    commas, empty list elements, unquoted values containing ':'), strict about what
    would make the result ambiguous (duplicate names, unterminated quotes).
    """
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if not name or i >= n or text[i] != "=":
            raise ValueError(f"malformed X-Matrix parameter near {text[start : i + 1]!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string in X-Matrix header")
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("dangling escape in X-Matrix header")
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            value = "".join(chars)
        else:
            start = i
            while i < n and text[i] not in ", \t":
                i += 1
            value = text[start:i]
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise ValueError("expected ',' between X-Matrix parameters")
        if name in params:
            raise ValueError(f"duplicate X-Matrix parameter {name!r}")
        params[name] = value
    return params


def parse_x_matrix(header: str) -> XMatrixAuth:
    """Parse an `X-Matrix ...` Authorization header value; raise ValueError if unusable.

    The scheme and parameter names are case-insensitive; `origin`, `key` and `sig` are
    required and must be non-empty, `destination` is optional.
    """
    if not isinstance(header, str):
        raise ValueError("Authorization header must be a string")
    scheme, sep, rest = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower() or not sep:
        raise ValueError("not an X-Matrix Authorization header")
    params = _parse_params(rest)
    missing = [p for p in ("origin", "key", "sig") if not params.get(p)]
    if missing:
        raise ValueError(f"X-Matrix header lacks {', '.join(missing)}")
    destination = params.get("destination")
    if destination == "":
        raise ValueError("X-Matrix header has an empty destination")
    if not is_valid_server_name(params["origin"]):
        raise ValueError("X-Matrix origin is not a valid server name")
    return XMatrixAuth(
        origin=params["origin"],
        destination=destination,
        key_id=params["key"],
        signature=params["sig"],
    )


def verify_request(
    auth: XMatrixAuth,
    method: str,
    uri: str,
    destination_expected: str,
    content: Any | None,
    verify_key: nacl.signing.VerifyKey,
) -> bool:
    """True if `auth` is a valid signature by `verify_key` over this request.

    A header naming another destination is rejected outright (the spec says such a
    request must get a 401), so a signature meant for one server cannot be replayed to
    another. `uri` must be the raw request target as received.
    """
    if auth.destination is not None and auth.destination != destination_expected:
        return False
    obj = request_json(method, uri, auth.origin, destination_expected, content)
    try:
        signature = decode_unpadded_base64(auth.signature)
        verify_key.verify(encode_canonical_json(obj), signature)
    except (ValueError, TypeError, binascii.Error, nacl.exceptions.BadSignatureError):
        return False
    return True
