"""Registration tokens for admins (Synapse's /v1/registration_tokens): list (all,
valid or invalid ones), create (given or generated), change, delete. Registration
itself checks and counts them (homeserver.accounts)."""

from __future__ import annotations

import re
import secrets
import string
import time
from typing import Any

from homeserver.errors import MatrixError, invalid_param, not_found
from homeserver.storage.account_auth import AccountAuthStore, RegistrationToken

TOKEN_CHARS = string.ascii_letters + string.digits + "._~-"
_TOKEN = re.compile(r"^[A-Za-z0-9._~\-]{1,64}$")
DEFAULT_LENGTH = 16
MAX_TOKENS_LISTED = 10_000


def token_json(t: RegistrationToken) -> dict[str, Any]:
    return {
        "token": t.token,
        "uses_allowed": t.uses_allowed,
        "pending": t.pending,
        "completed": t.completed,
        "expiry_time": t.expiry_time,
    }


def _is_valid(t: RegistrationToken, now: int) -> bool:
    uses_left = t.uses_allowed is None or t.pending + t.completed < t.uses_allowed
    return uses_left and (t.expiry_time is None or t.expiry_time > now)


def check_token_name(token: str) -> str:
    if not _TOKEN.match(token):
        raise invalid_param("token must be 1-64 characters from A-Z, a-z, 0-9, '.', '_', '~', '-'")
    return token


class AdminTokens:
    def __init__(self, store: AccountAuthStore) -> None:
        self._store = store

    async def list(self, valid: bool | None) -> dict[str, Any]:
        now = int(time.time() * 1000)
        tokens = await self._store.list_registration_tokens()
        if valid is not None:
            tokens = [t for t in tokens if _is_valid(t, now) == valid]
        return {"registration_tokens": [token_json(t) for t in tokens[:MAX_TOKENS_LISTED]]}

    async def get(self, token: str) -> dict[str, Any]:
        found = await self._store.get_registration_token(token)
        if found is None:
            raise not_found(f"No such registration token: {token}")
        return token_json(found)

    async def create(
        self, token: str | None, length: int, uses_allowed: int | None, expiry_time: int | None
    ) -> dict[str, Any]:
        if token is None:
            for _ in range(10):
                token = "".join(secrets.choice(TOKEN_CHARS) for _ in range(length))
                if await self._store.create_registration_token(token, uses_allowed, expiry_time):
                    break
            else:
                raise MatrixError(500, "M_UNKNOWN", "Could not generate a free token")
        elif not await self._store.create_registration_token(token, uses_allowed, expiry_time):
            raise MatrixError(400, "M_INVALID_PARAM", f"Token already in use: {token}")
        return await self.get(token)

    async def update(self, token: str, changes: dict[str, int | None]) -> dict[str, Any]:
        found = await self._store.update_registration_token(token, changes)
        if found is None:
            raise not_found(f"No such registration token: {token}")
        return token_json(found)

    async def delete(self, token: str) -> None:
        if not await self._store.delete_registration_token(token):
            raise not_found(f"No such registration token: {token}")
