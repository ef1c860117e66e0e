"""AccountAuthStore: UIA sessions, registration tokens and login tokens (migration 0002).

Everything here is short-lived proof that someone authenticated, kept in the database
(not memory) so a multi-step flow survives a restart and never depends on which worker
answered the previous step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json, now_ms
from .database import Database
from .errors import IntegrityError


@dataclass(frozen=True)
class UiaSession:
    session_id: str
    uri: str
    method: str
    completed: list[str]
    data: dict[str, Any]
    created_ts: int


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None


_TOKEN_COLUMNS = "token, uses_allowed, pending, completed, expiry_time"
# A token is usable while it has uses left (pending ones count) and has not expired.
_TOKEN_USABLE = (
    "(uses_allowed IS NULL OR pending + completed < uses_allowed)"
    " AND (expiry_time IS NULL OR expiry_time > $2)"
)


class AccountAuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- UIA sessions -------------------------------------------------------------------

    async def create_uia_session(self, session_id: str, uri: str, method: str) -> None:
        await self.db.execute(
            "INSERT INTO uia_sessions (session_id, uri, method, created_ts)"
            " VALUES ($1, $2, $3, $4)",
            session_id,
            uri,
            method,
            now_ms(),
        )

    async def get_uia_session(self, session_id: str) -> UiaSession | None:
        row = await self.db.fetchrow(
            "SELECT session_id, uri, method, completed, data, created_ts FROM uia_sessions"
            " WHERE session_id = $1",
            session_id,
        )
        if row is None:
            return None
        return UiaSession(row[0], row[1], row[2], load_json(row[3]), load_json(row[4]), int(row[5]))

    async def complete_uia_stage(
        self, session_id: str, stage: str, data: dict[str, Any] | None = None
    ) -> UiaSession | None:
        """Record `stage` as done and merge `data`; the updated session (None if gone)."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT completed, data FROM uia_sessions WHERE session_id = $1", session_id
            )
            if row is None:
                return None
            completed: list[str] = load_json(row[0])
            merged: dict[str, Any] = load_json(row[1])
            if stage not in completed:
                completed.append(stage)
            merged.update(data or {})
            await conn.execute(
                "UPDATE uia_sessions SET completed = $2, data = $3 WHERE session_id = $1",
                session_id,
                dump_json(completed),
                dump_json(merged),
            )
        return await self.get_uia_session(session_id)

    async def delete_uia_session(self, session_id: str) -> None:
        await self.db.execute("DELETE FROM uia_sessions WHERE session_id = $1", session_id)

    async def delete_uia_sessions_before(self, ts: int) -> int:
        return await self.db.execute("DELETE FROM uia_sessions WHERE created_ts < $1", ts)

    # -- registration tokens ------------------------------------------------------------

    # -- when an access token last passed UIA (ui_auth.session_timeout) ------------------

    async def token_validated_ts(self, token_id: int) -> int | None:
        """When the user last completed UIA with this access token (its creation, at
        login, when never since); None for an unknown token."""
        return await self.db.fetchval(
            "SELECT COALESCE(last_validated_ts, created_ts) FROM access_tokens WHERE id = $1",
            token_id,
        )

    async def mark_token_validated(self, token_id: int, ts: int) -> None:
        await self.db.execute(
            "UPDATE access_tokens SET last_validated_ts = $1 WHERE id = $2", ts, token_id
        )

    async def create_registration_token(
        self, token: str, uses_allowed: int | None = None, expiry_time: int | None = None
    ) -> bool:
        """False if the token already exists."""
        try:
            await self.db.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time)"
                " VALUES ($1, $2, $3)",
                token,
                uses_allowed,
                expiry_time,
            )
        except IntegrityError:
            return False
        return True

    async def get_registration_token(self, token: str) -> RegistrationToken | None:
        row = await self.db.fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = $1", token
        )
        return None if row is None else RegistrationToken(*row)

    async def list_registration_tokens(self) -> list[RegistrationToken]:
        rows = await self.db.fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens ORDER BY token"
        )
        return [RegistrationToken(*r) for r in rows]

    async def update_registration_token(
        self, token: str, changes: dict[str, int | None]
    ) -> RegistrationToken | None:
        """Set `uses_allowed` and/or `expiry_time` (keys present in `changes`)."""
        columns = [c for c in ("uses_allowed", "expiry_time") if c in changes]
        if columns:
            sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
            await self.db.execute(
                f"UPDATE registration_tokens SET {sets} WHERE token = $1",
                token,
                *(changes[c] for c in columns),
            )
        return await self.get_registration_token(token)

    async def delete_registration_token(self, token: str) -> bool:
        return await self.db.execute("DELETE FROM registration_tokens WHERE token = $1", token) > 0

    async def registration_token_usable(self, token: str, now: int | None = None) -> bool:
        value = await self.db.fetchval(
            f"SELECT 1 FROM registration_tokens WHERE token = $1 AND {_TOKEN_USABLE}",
            token,
            now if now is not None else now_ms(),
        )
        return value is not None

    async def reserve_registration_token(self, token: str, now: int | None = None) -> bool:
        """Atomically take one use of a usable token (pending + 1); False if unusable."""
        changed = await self.db.execute(
            f"UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1"
            f" AND {_TOKEN_USABLE}",
            token,
            now if now is not None else now_ms(),
        )
        return changed > 0

    async def complete_registration_token(self, token: str) -> None:
        """A reserved use turned into a registration."""
        await self.db.execute(
            "UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN"
            " pending - 1 ELSE 0 END, completed = completed + 1 WHERE token = $1",
            token,
        )

    # -- login tokens -------------------------------------------------------------------

    async def add_login_token(self, token: str, user_id: str, expiry_ts: int) -> None:
        await self.db.execute(
            "INSERT INTO login_tokens (token, user_id, expiry_ts) VALUES ($1, $2, $3)",
            token,
            user_id,
            expiry_ts,
        )

    async def consume_login_token(self, token: str, now: int | None = None) -> str | None:
        """The user a login token was issued for, deleting it (single use); None if the
        token is unknown, already used or expired."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "DELETE FROM login_tokens WHERE token = $1 RETURNING user_id, expiry_ts", token
            )
        if row is None or int(row[1]) <= (now if now is not None else now_ms()):
            return None
        return row[0]

    async def delete_expired_login_tokens(self, now: int | None = None) -> int:
        return await self.db.execute(
            "DELETE FROM login_tokens WHERE expiry_ts <= $1", now if now is not None else now_ms()
        )
