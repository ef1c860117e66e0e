"""ThreepidStore: our users' validated email addresses (user_threepids) and the
validations in progress (threepid_validation_sessions).

Every change that must not race is one conditional statement: an address is taken by
`INSERT ... ON CONFLICT DO NOTHING` on its primary key (two users adding it at once: one
wins), and a session is validated by an UPDATE that matches its secret, token and expiry.

Bounds: sessions expire (`expires_at`, dropped by the accounts housekeeping), and the
requestToken rate limit (per client address and per email address) bounds how many a
stranger makes; one row per (purpose, address, client_secret).
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database

_SESSION_COLUMNS = (
    "session_id, purpose, medium, address, client_secret, token, send_attempt, next_link,"
    " created_at, expires_at, validated_at"
)


@dataclass(frozen=True)
class ValidationSession:
    session_id: str
    purpose: str  # "add", "registration" or "password_reset": what the mail said
    medium: str
    address: str
    client_secret: str
    token: str
    send_attempt: int
    next_link: str | None
    created_at: int
    expires_at: int
    validated_at: int | None


@dataclass(frozen=True)
class UserThreepid:
    medium: str
    address: str
    validated_at: int
    added_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "medium": self.medium,
            "address": self.address,
            "validated_at": self.validated_at,
            "added_at": self.added_at,
        }


class ThreepidStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- validation sessions

    async def find_session(
        self, purpose: str, medium: str, address: str, client_secret: str
    ) -> ValidationSession | None:
        row = await self.db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
            " WHERE purpose = $1 AND medium = $2 AND address = $3 AND client_secret = $4",
            purpose,
            medium,
            address,
            client_secret,
        )
        return None if row is None else ValidationSession(*row)

    async def get_session(self, session_id: str) -> ValidationSession | None:
        row = await self.db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions WHERE session_id = $1",
            session_id,
        )
        return None if row is None else ValidationSession(*row)

    async def start_session(self, session: ValidationSession) -> ValidationSession:
        """Store a new session; a concurrent request for the same (purpose, address,
        secret) that got there first wins, and its session is returned."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM threepid_validation_sessions WHERE purpose = $1 AND medium = $2"
                " AND address = $3 AND client_secret = $4 AND expires_at <= $5",
                session.purpose,
                session.medium,
                session.address,
                session.client_secret,
                session.created_at,
            )
            await tx.execute(
                f"INSERT INTO threepid_validation_sessions ({_SESSION_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT DO NOTHING",
                session.session_id,
                session.purpose,
                session.medium,
                session.address,
                session.client_secret,
                session.token,
                session.send_attempt,
                session.next_link,
                session.created_at,
                session.expires_at,
                session.validated_at,
            )
        stored = await self.find_session(
            session.purpose, session.medium, session.address, session.client_secret
        )
        return stored or session

    async def advance_send_attempt(self, session_id: str, send_attempt: int) -> bool:
        """Record a higher send_attempt; False when it was not higher (do not re-send)."""
        changed = await self.db.execute(
            "UPDATE threepid_validation_sessions SET send_attempt = $2"
            " WHERE session_id = $1 AND send_attempt < $2",
            session_id,
            send_attempt,
        )
        return changed > 0

    async def mark_validated(
        self, session_id: str, client_secret: str, token: str, now: int
    ) -> bool:
        """Validate an unexpired session whose secret and token match (idempotent)."""
        changed = await self.db.execute(
            "UPDATE threepid_validation_sessions SET validated_at = COALESCE(validated_at, $4)"
            " WHERE session_id = $1 AND client_secret = $2 AND token = $3 AND expires_at > $4",
            session_id,
            client_secret,
            token,
            now,
        )
        return changed > 0

    async def consume_session(self, session_id: str) -> bool:
        """Delete a used session; False when another request used it first."""
        return (
            await self.db.execute(
                "DELETE FROM threepid_validation_sessions WHERE session_id = $1", session_id
            )
            > 0
        )

    async def delete_expired_sessions(self, now: int) -> int:
        return await self.db.execute(
            "DELETE FROM threepid_validation_sessions WHERE expires_at <= $1", now
        )

    # -- users' addresses

    async def add(
        self, user_id: str, medium: str, address: str, validated_at: int, now: int
    ) -> bool:
        """Give the address to the user; False when another user holds it."""
        await self.db.execute(
            "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            medium,
            address,
            user_id,
            validated_at,
            now,
        )
        return await self.user_of(medium, address) == user_id

    async def remove(self, user_id: str, medium: str, address: str) -> bool:
        changed = await self.db.execute(
            "DELETE FROM user_threepids WHERE medium = $1 AND address = $2 AND user_id = $3",
            medium,
            address,
            user_id,
        )
        return changed > 0

    async def remove_all(self, user_id: str) -> int:
        return await self.db.execute("DELETE FROM user_threepids WHERE user_id = $1", user_id)

    async def of_user(self, user_id: str) -> list[UserThreepid]:
        rows = await self.db.fetch(
            "SELECT medium, address, validated_at, added_at FROM user_threepids"
            " WHERE user_id = $1 ORDER BY added_at, address",
            user_id,
        )
        return [UserThreepid(*row) for row in rows]

    async def user_of(self, medium: str, address: str) -> str | None:
        return await self.db.fetchval(
            "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
            medium,
            address,
        )
