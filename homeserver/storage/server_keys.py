"""ServerKeyStore: other servers' signing keys, as fetched and verified by the keyring."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._util import placeholders
from .database import Database

# key_id -> (verify_key_b64, valid_until_ts, expired_ts or None)
ServerKeys = dict[str, tuple[str, int, int | None]]


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def store_server_keys(
        self,
        server_name: str,
        keys: Sequence[tuple[str, str, int, int | None]],
        fetched_ts: int,
    ) -> None:
        """Upsert (key_id, verify_key_b64, valid_until_ts, expired_ts) rows for a server.

        A re-fetched key replaces what we had: the newest answer wins.
        """
        await self.db.executemany(
            "INSERT INTO server_keys"
            " (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,"
            " valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,"
            " fetched_ts = excluded.fetched_ts",
            [
                (server_name, kid, vk, until, expired, fetched_ts)
                for kid, vk, until, expired in keys
            ],
        )

    async def get_server_keys(
        self, server_name: str, key_ids: Iterable[str] | None = None
    ) -> ServerKeys:
        """The stored keys of a server: all of them, or only `key_ids` that we have."""
        if key_ids is None:
            rows = await self.db.fetch(
                "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_keys"
                " WHERE server_name = $1",
                server_name,
            )
        else:
            ids = list(dict.fromkeys(key_ids))
            if not ids:
                return {}
            rows = await self.db.fetch(
                "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_keys"
                f" WHERE server_name = $1 AND key_id IN ({placeholders(len(ids), start=2)})",
                server_name,
                *ids,
            )
        return {r[0]: (r[1], int(r[2]), None if r[3] is None else int(r[3])) for r in rows}
