"""SsoStore: sign-ins in progress (sso_sessions) and which user an identity
provider's subject is (user_external_ids).

A sign-in is taken once (`take_session` deletes it, after the browser was checked:
someone else's request with the code cannot spoil the real browser's sign-in), so a
replayed callback finds nothing. Bounds: sessions expire (the caller drops them), and starting one is
rate-limited per client address.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True)
class SsoSession:
    state: str
    idp_id: str
    browser_key: str
    nonce: str
    code_verifier: str | None
    client_redirect_url: str | None
    ui_auth_session: str | None
    created_ts: int


class SsoStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_session(self, session: SsoSession) -> None:
        await self.db.execute(
            "INSERT INTO sso_sessions (state, idp_id, browser_key, nonce, code_verifier,"
            " client_redirect_url, ui_auth_session, created_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            session.state,
            session.idp_id,
            session.browser_key,
            session.nonce,
            session.code_verifier,
            session.client_redirect_url,
            session.ui_auth_session,
            session.created_ts,
        )

    async def get_session(self, state: str) -> SsoSession | None:
        row = await self.db.fetchrow(
            "SELECT state, idp_id, browser_key, nonce, code_verifier, client_redirect_url,"
            " ui_auth_session, created_ts FROM sso_sessions WHERE state = $1",
            state,
        )
        return None if row is None else SsoSession(*row)

    async def take_session(self, state: str) -> bool:
        """Remove the sign-in so it is used once; False when a concurrent callback did."""
        return await self.db.execute("DELETE FROM sso_sessions WHERE state = $1", state) > 0

    async def delete_sessions_before(self, ts: int) -> int:
        return await self.db.execute("DELETE FROM sso_sessions WHERE created_ts < $1", ts)

    async def user_of(self, auth_provider: str, external_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT user_id FROM user_external_ids WHERE auth_provider = $1 AND external_id = $2",
            auth_provider,
            external_id,
        )

    async def link(self, auth_provider: str, external_id: str, user_id: str) -> bool:
        """Record that the subject is the user; False when it is someone else already."""
        await self.db.execute(
            "INSERT INTO user_external_ids (auth_provider, external_id, user_id)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            auth_provider,
            external_id,
            user_id,
        )
        return await self.user_of(auth_provider, external_id) == user_id

    async def has_identity(self, user_id: str) -> bool:
        found = await self.db.fetchval(
            "SELECT 1 FROM user_external_ids WHERE user_id = $1 LIMIT 1", user_id
        )
        return found is not None

    async def of_user(self, user_id: str) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT auth_provider, external_id FROM user_external_ids WHERE user_id = $1"
            " ORDER BY auth_provider, external_id",
            user_id,
        )
        return [(r[0], r[1]) for r in rows]
