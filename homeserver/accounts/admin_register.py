"""Synapse's shared-secret registration (/_synapse/admin/v1/register), bit for bit.

GET hands out a nonce (single use, valid NONCE_LIFETIME_S); POST carries
`mac = HMAC-SHA1(secret, nonce \\0 username \\0 password \\0 admin|notadmin [\\0 user_type])`
in hex, so Synapse's `register_new_matrix_user` and our CLI work unchanged.

Nonces carry their own proof: `<expiry>.<random>.<tag>`, the tag an HMAC under a key
of this process. Handing one out stores nothing, so anonymous GETs, however many, can
never push out the nonce a real admin is about to use (they once could, from a table
of 10,000). Only a nonce spent on a registration that passed the MAC check is
remembered, until it expires, so it cannot be replayed; a restart makes clients fetch
a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from homeserver.errors import MatrixError, forbidden

NONCE_LIFETIME_S = 60.0
MAX_NONCES = 10_000


def expected_mac(
    secret: str, nonce: str, username: str, password: str, admin: bool, user_type: str | None
) -> str:
    parts = [nonce, username, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    return hmac.new(
        secret.encode("utf-8"), b"\x00".join(p.encode("utf-8") for p in parts), hashlib.sha1
    ).hexdigest()


class SharedSecretRegistration:
    def __init__(self, secret: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = secret
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # Nonces spent on successful registrations (nonce -> expiry), against replay.
        # Growing it needs the shared secret; bounded all the same.
        self._spent: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def _require_enabled(self) -> str:
        if not self._secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return self._secret

    def _tag(self, body: str) -> str:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        self._require_enabled()
        expiry = int((self._clock() + NONCE_LIFETIME_S) * 1000)
        body = f"{expiry}.{secrets.token_hex(16)}"
        return f"{body}.{self._tag(body)}"

    def _valid_nonce(self, nonce: str) -> float | None:
        """The nonce's expiry if we issued it and it is still live and unspent."""
        body, _, tag = nonce.rpartition(".")
        expiry_text = body.partition(".")[0]
        if not body.isascii() or not expiry_text.isdigit() or len(expiry_text) > 15:
            return None
        if not hmac.compare_digest(self._tag(body), tag.encode("ascii", "replace").decode()):
            return None
        expiry = int(expiry_text) / 1000
        if expiry < self._clock() or nonce in self._spent:
            return None
        return expiry

    def check(
        self,
        nonce: str,
        username: str,
        password: str,
        admin: bool,
        user_type: str | None,
        mac: str,
    ) -> None:
        """Verify `nonce` and `mac`, then spend the nonce; raise the spec-shaped error
        otherwise."""
        secret = self._require_enabled()
        self._expire()
        expiry = self._valid_nonce(nonce)
        if expiry is None:
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        want = expected_mac(secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want.encode("ascii"), mac.encode("utf-8", "replace")):
            raise forbidden("HMAC incorrect")
        if len(self._spent) >= MAX_NONCES:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many registrations: try again soon")
        self._spent[nonce] = expiry

    def _expire(self) -> None:
        now = self._clock()
        if any(t < now for t in self._spent.values()):
            self._spent = {n: t for n, t in self._spent.items() if t >= now}


def admin_register_response(result: dict[str, Any]) -> dict[str, Any]:
    """Synapse's answer shape (user_id, home_server, access_token, device_id)."""
    keys = ("user_id", "home_server", "access_token", "device_id")
    return {k: result[k] for k in keys if k in result}
