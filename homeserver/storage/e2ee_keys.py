"""E2eeKeyStore: device keys, one-time and fallback keys, cross-signing keys, signatures.

Only storage: validation and signature checks live in homeserver.e2ee. Claims run in
one write transaction (writes are serialised), so a one-time key is handed out once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json, placeholders
from .cache import LruCache
from .database import Connection, Database, Row


@dataclass(frozen=True)
class StoredSignature:
    target_user_id: str
    target_key_id: str
    signer_user_id: str
    signer_key_id: str
    signature: str


class E2eeKeyStore:
    """E2EE key storage. One instance per app: it caches what every /sync of a device
    reads (one-time key counts, unused fallback key types) and every write to those
    goes through it, so the cache is never stale."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._otk_counts: LruCache[tuple[str, str], dict[str, int]] = LruCache(
            100_000, "count_e2e_one_time_keys"
        )
        self._fallback_types: LruCache[tuple[str, str], list[str]] = LruCache(
            100_000, "get_e2e_unused_fallback_key_types"
        )

    def _forget_device(self, user_id: str, device_id: str) -> None:
        self._otk_counts.invalidate((user_id, device_id))
        self._fallback_types.invalidate((user_id, device_id))

    # -- device keys ---------------------------------------------------------------------

    async def get_device_keys_json(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )
        return None if raw is None else load_json(raw)

    async def set_device_keys(self, user_id: str, device_id: str, keys: Mapping[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
            user_id,
            device_id,
            dump_json(keys),
        )

    async def get_device_keys_for_user(
        self, user_id: str, device_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """device_id -> uploaded device_keys, for the devices that still exist."""
        sql = (
            "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
            " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
            " WHERE k.user_id = $1"
        )
        args: list[Any] = [user_id]
        if device_ids:
            ids = list(dict.fromkeys(device_ids))
            sql += f" AND k.device_id IN ({placeholders(len(ids), start=2)})"
            args += ids
        rows = await self.db.fetch(sql, *args)
        result: dict[str, dict[str, Any]] = {}
        for device_id, key_json, display_name in rows:
            keys = load_json(key_json)
            if display_name is not None:
                keys.setdefault("unsigned", {})["device_display_name"] = display_name
            result[device_id] = keys
        return result

    async def delete_device(self, user_id: str, device_id: str) -> None:
        """Forget every key of a deleted device."""
        self._forget_device(user_id, device_id)
        async with self.db.transaction() as conn:
            for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE user_id = $1 AND device_id = $2",
                    user_id,
                    device_id,
                )
            await conn.execute(
                "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = $1"
                " AND target_key_id = $2",
                user_id,
                device_id,
            )

    # -- one-time keys -------------------------------------------------------------------

    async def get_one_time_keys(
        self, user_id: str, device_id: str, key_ids: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """(algorithm, key_id) -> stored JSON text, for those already present."""
        found: dict[tuple[str, str], str] = {}
        for algorithm, key_id in key_ids:
            raw = await self.db.fetchval(
                "SELECT key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
                " AND algorithm = $3 AND key_id = $4",
                user_id,
                device_id,
                algorithm,
                key_id,
            )
            if raw is not None:
                found[(algorithm, key_id)] = raw
        return found

    async def add_one_time_keys(
        self, user_id: str, device_id: str, keys: Iterable[tuple[str, str, Any]]
    ) -> None:
        """Insert (algorithm, key_id, key) rows; existing ones are left untouched."""
        self._forget_device(user_id, device_id)
        await self.db.executemany(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(user_id, device_id, alg, kid, dump_json(key)) for alg, kid, key in keys],
        )

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        cached = self._otk_counts.get((user_id, device_id))
        if cached is not None:
            return dict(cached)
        generation = self._otk_counts.generation()
        rows = await self.db.fetch(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1"
            " AND device_id = $2 GROUP BY algorithm",
            user_id,
            device_id,
        )
        counts = {r[0]: int(r[1]) for r in rows}
        self._otk_counts.set_if_current((user_id, device_id), counts, generation)
        return dict(counts)

    async def claim_key(
        self, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, Any] | None:
        """Take one one-time key (deleting it), else the fallback key (marking it used).

        Returns ("<algorithm>:<key_id>", key) or None when the device has neither.
        """
        self._forget_device(user_id, device_id)
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = $1"
                " AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1",
                user_id,
                device_id,
                algorithm,
            )
            if row is not None:
                await conn.execute(
                    "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
                    " AND algorithm = $3 AND key_id = $4",
                    user_id,
                    device_id,
                    algorithm,
                    row[0],
                )
                return f"{algorithm}:{row[0]}", load_json(row[1])
            row = await _fallback_row(conn, user_id, device_id, algorithm)
            if row is None:
                return None
            await conn.execute(
                "UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2"
                " AND algorithm = $3",
                user_id,
                device_id,
                algorithm,
            )
            return f"{algorithm}:{row[0]}", load_json(row[1])

    # -- fallback keys -------------------------------------------------------------------

    async def set_fallback_key(
        self, user_id: str, device_id: str, algorithm: str, key_id: str, key: Any
    ) -> None:
        """Replace the device's fallback key for `algorithm`; re-uploading the same key
        keeps its `used` flag (clients re-send it with every upload)."""
        self._forget_device(user_id, device_id)
        text = dump_json(key)
        async with self.db.transaction() as conn:
            row = await _fallback_row(conn, user_id, device_id, algorithm)
            if row is not None and row[0] == key_id and row[1] == text:
                return
            await conn.execute(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json,"
                " used) VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (user_id, device_id,"
                " algorithm) DO UPDATE SET key_id = excluded.key_id,"
                " key_json = excluded.key_json, used = FALSE",
                user_id,
                device_id,
                algorithm,
                key_id,
                text,
            )

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        cached = self._fallback_types.get((user_id, device_id))
        if cached is not None:
            return list(cached)
        generation = self._fallback_types.generation()
        rows = await self.db.fetch(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2"
            " AND NOT used ORDER BY algorithm",
            user_id,
            device_id,
        )
        types = [r[0] for r in rows]
        self._fallback_types.set_if_current((user_id, device_id), types, generation)
        return list(types)

    # -- cross-signing keys --------------------------------------------------------------

    async def get_cross_signing_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        """key_type ("master", "self_signing", "user_signing") -> key object."""
        rows = await self.db.fetch(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = $1", user_id
        )
        return {r[0]: load_json(r[1]) for r in rows}

    async def set_cross_signing_keys(
        self, user_id: str, keys: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Store key_type -> (public key, key object) in one transaction."""
        async with self.db.transaction() as conn:
            for key_type, (public_key, key) in keys.items():
                await conn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key,"
                    " key_json) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key_type)"
                    " DO UPDATE SET public_key = excluded.public_key,"
                    " key_json = excluded.key_json",
                    user_id,
                    key_type,
                    public_key,
                    dump_json(key),
                )

    # -- signatures ----------------------------------------------------------------------

    async def add_signatures(self, signatures: Iterable[StoredSignature]) -> None:
        await self.db.executemany(
            "INSERT INTO e2e_cross_signing_signatures (target_user_id, target_key_id,"
            " signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
            " DO UPDATE SET signature = excluded.signature",
            [
                (s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature)
                for s in signatures
            ],
        )

    async def get_signatures(self, target_user_id: str) -> list[StoredSignature]:
        """Every stored signature on any key (device or cross-signing) of a user."""
        rows = await self.db.fetch(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
            " FROM e2e_cross_signing_signatures WHERE target_user_id = $1",
            target_user_id,
        )
        return [StoredSignature(*r) for r in rows]


async def _fallback_row(
    conn: Connection, user_id: str, device_id: str, algorithm: str
) -> Row | None:
    """(key_id, key_json) of the device's fallback key for `algorithm`, or None."""
    return await conn.fetchrow(
        "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1"
        " AND device_id = $2 AND algorithm = $3",
        user_id,
        device_id,
        algorithm,
    )
