"""Synapse's shared-secret registration (/_synapse/admin/v1/register), bit for bit.

GET hands out a nonce (single use, valid NONCE_LIFETIME_S); POST carries
`mac = HMAC-SHA1(secret, nonce \\0 username \\0 password \\0 admin|notadmin [\\0 user_type])`
in hex, so Synapse's `register_new_matrix_user` and our CLI work unchanged. Nonces are
kept in memory: a restart just makes clients fetch a new one.
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
        self._nonces: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def _require_enabled(self) -> str:
        if not self._secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return self._secret

    def new_nonce(self) -> str:
        self._require_enabled()
        self._expire()
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = self._clock() + NONCE_LIFETIME_S
        return nonce

    def check(
        self,
        nonce: str,
        username: str,
        password: str,
        admin: bool,
        user_type: str | None,
        mac: str,
    ) -> None:
        """Consume `nonce` and verify `mac`; raise the spec-shaped error otherwise."""
        secret = self._require_enabled()
        self._expire()
        if self._nonces.pop(nonce, None) is None:
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        want = expected_mac(secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want.encode("ascii"), mac.encode("utf-8", "replace")):
            raise forbidden("HMAC incorrect")

    def _expire(self) -> None:
        now = self._clock()
        if len(self._nonces) > MAX_NONCES or any(t < now for t in self._nonces.values()):
            self._nonces = {n: t for n, t in self._nonces.items() if t >= now}
            while len(self._nonces) > MAX_NONCES:
                self._nonces.pop(next(iter(self._nonces)))


def admin_register_response(result: dict[str, Any]) -> dict[str, Any]:
    """Synapse's answer shape (user_id, home_server, access_token, device_id)."""
    keys = ("user_id", "home_server", "access_token", "device_id")
    return {k: result[k] for k in keys if k in result}
