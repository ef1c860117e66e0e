"""RoomStore: the rooms we know (with their version), the public list and aliases."""

from __future__ import annotations

from dataclasses import dataclass

from ._util import NO_LIMIT, dump_json, load_json, now_ms
from .cache import LruCache
from .database import Database
from .errors import IntegrityError


@dataclass(frozen=True)
class RoomInfo:
    room_id: str
    room_version: str
    creator: str | None
    is_public: bool
    created_ts: int


@dataclass(frozen=True)
class AliasInfo:
    room_alias: str
    room_id: str
    servers: list[str]
    creator: str | None


class RoomStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._versions: dict[str, str] = {}
        # Its generation moves whenever a room is published or unpublished, so a cached
        # directory listing knows at once that it is out of date; a named cache, so the
        # change reaches every process of a deployment (storage/cache.py invalidations).
        self._directory_changes: LruCache[str, None] = LruCache(1, name="room_directory")

    @property
    def directory_version(self) -> int:
        return self._directory_changes.generation()

    def _directory_changed(self) -> None:
        self._directory_changes.clear()

    async def store_room(
        self,
        room_id: str,
        room_version: str,
        creator: str | None = None,
        is_public: bool = False,
        created_ts: int | None = None,
    ) -> bool:
        """Record a room; return False (changing nothing) if it is already known."""
        changed = await self.db.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id) DO NOTHING",
            room_id,
            room_version,
            creator,
            is_public,
            created_ts if created_ts is not None else now_ms(),
        )
        if is_public:
            self._directory_changed()
        return changed > 0

    async def get_room(self, room_id: str) -> RoomInfo | None:
        row = await self.db.fetchrow(
            "SELECT room_id, room_version, creator, is_public, created_ts FROM rooms"
            " WHERE room_id = $1",
            room_id,
        )
        if row is None:
            return None
        return RoomInfo(row[0], row[1], row[2], bool(row[3]), row[4])

    async def get_room_version(self, room_id: str) -> str | None:
        version = self._versions.get(room_id)
        if version is None:
            version = await self.db.fetchval(
                "SELECT room_version FROM rooms WHERE room_id = $1", room_id
            )
            if version is not None:  # a room's version never changes
                self._versions[room_id] = version
        return version

    async def correct_room_version(self, room_id: str, room_version: str) -> None:
        """Replace the version recorded for a room we knew only out of band (an invite
        or a knock, whose sender named the version) by the one a join proved."""
        await self.db.execute(
            "UPDATE rooms SET room_version = $2 WHERE room_id = $1", room_id, room_version
        )
        self._versions[room_id] = room_version

    def forget_room(self, room_id: str) -> None:
        """Drop the cached version of a deleted room (an admin purge)."""
        self._versions.pop(room_id, None)

    async def set_room_is_public(self, room_id: str, is_public: bool) -> bool:
        """Publish to / remove from the room directory; False if the room is unknown."""
        changed = (
            await self.db.execute(
                "UPDATE rooms SET is_public = $2 WHERE room_id = $1", room_id, is_public
            )
            > 0
        )
        self._directory_changed()
        return changed

    async def get_public_room_ids(
        self, limit: int | None = None, since: str | None = None
    ) -> list[str]:
        """Published rooms ordered by room ID; `since` continues after that room ID."""
        rows = await self.db.fetch(
            "SELECT room_id FROM rooms WHERE is_public AND room_id > $1 ORDER BY room_id LIMIT $2",
            since or "",
            limit if limit is not None else NO_LIMIT,
        )
        return [r[0] for r in rows]

    async def set_appservice_listing(
        self, appservice_id: str, network_id: str, room_id: str, public: bool
    ) -> None:
        """Publish to / remove from an appservice network's room list."""
        if public:
            await self.db.execute(
                "INSERT INTO appservice_room_list (appservice_id, network_id, room_id)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                appservice_id,
                network_id,
                room_id,
            )
        else:
            await self.db.execute(
                "DELETE FROM appservice_room_list WHERE appservice_id = $1"
                " AND network_id = $2 AND room_id = $3",
                appservice_id,
                network_id,
                room_id,
            )
        self._directory_changed()

    async def get_appservice_listed_room_ids(
        self, instance: tuple[str, str] | None, limit: int
    ) -> list[str]:
        """Rooms of one (appservice, network) list, or of every list (None)."""
        if instance is None:
            rows = await self.db.fetch(
                "SELECT DISTINCT room_id FROM appservice_room_list ORDER BY room_id LIMIT $1",
                limit,
            )
        else:
            rows = await self.db.fetch(
                "SELECT room_id FROM appservice_room_list WHERE appservice_id = $1"
                " AND network_id = $2 ORDER BY room_id LIMIT $3",
                instance[0],
                instance[1],
                limit,
            )
        return [r[0] for r in rows]

    async def count_public_rooms(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM rooms WHERE is_public"))

    # -- aliases --------------------------------------------------------------------

    async def create_alias(
        self, room_alias: str, room_id: str, servers: list[str], creator: str | None = None
    ) -> bool:
        """Map an alias to a room; False if the alias is already taken."""
        try:
            await self.db.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator, servers)"
                " VALUES ($1, $2, $3, $4)",
                room_alias,
                room_id,
                creator,
                dump_json(list(servers)),
            )
        except IntegrityError:
            return False
        return True

    async def get_alias(self, room_alias: str) -> AliasInfo | None:
        row = await self.db.fetchrow(
            "SELECT room_alias, room_id, servers, creator FROM room_aliases WHERE room_alias = $1",
            room_alias,
        )
        if row is None:
            return None
        return AliasInfo(row[0], row[1], load_json(row[2]), row[3])

    async def delete_alias(self, room_alias: str) -> bool:
        return (
            await self.db.execute("DELETE FROM room_aliases WHERE room_alias = $1", room_alias) > 0
        )

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY room_alias", room_id
        )
        return [r[0] for r in rows]
