"""ThreepidBindStore: which identity servers hold a binding a user made through us
(migration 0017), so unbinding and deactivation can ask each to forget it."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database

# Bindings remembered per user: a client cannot make us hold an unbounded list (the
# oldest binding past the bound is still unbound at the identity server, just not
# remembered for deactivation).
MAX_BINDS_PER_USER = 100


@dataclass(frozen=True)
class ThreepidBind:
    medium: str
    address: str
    id_server: str


class ThreepidBindStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, user_id: str, medium: str, address: str, id_server: str) -> bool:
        """Remember a binding; False when the user already holds the maximum."""
        async with self.db.transaction() as conn:
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM user_threepid_id_server WHERE user_id = $1", user_id
            )
            if int(count or 0) >= MAX_BINDS_PER_USER:
                return False
            await conn.execute(
                "INSERT INTO user_threepid_id_server (user_id, medium, address, id_server)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                user_id,
                medium,
                address,
                id_server,
            )
        return True

    async def remove(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        await self.db.execute(
            "DELETE FROM user_threepid_id_server WHERE user_id = $1 AND medium = $2"
            " AND address = $3 AND id_server = $4",
            user_id,
            medium,
            address,
            id_server,
        )

    async def for_user(
        self, user_id: str, medium: str | None = None, address: str | None = None
    ) -> list[ThreepidBind]:
        rows = await self.db.fetch(
            "SELECT medium, address, id_server FROM user_threepid_id_server"
            " WHERE user_id = $1 ORDER BY medium, address, id_server",
            user_id,
        )
        return [
            ThreepidBind(r[0], r[1], r[2])
            for r in rows
            if (medium is None or r[0] == medium) and (address is None or r[1] == address)
        ]
