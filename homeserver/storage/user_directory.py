"""UserDirectoryStore: the tables behind /user_directory/search.

Who is visible comes from `room_memberships` (indexed by user and by room) joined with
`user_directory_rooms` (which rooms are public); names come from `profiles` for local
users and `user_directory_remote_profiles` for remote ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Words of a search term that are matched (the rest are ignored).
MAX_TERM_WORDS = 8


@dataclass(frozen=True)
class DirectoryEntry:
    user_id: str
    displayname: str | None
    avatar_url: str | None


@dataclass(frozen=True)
class RoomVisibilitySource:
    """The current state events a room's directory visibility is computed from."""

    room_id: str
    join_rules_event_id: str | None
    history_visibility_event_id: str | None


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_room_visibility(
        self,
        room_id: str,
        join_rules_event_id: str | None,
        history_visibility_event_id: str | None,
        is_public: bool,
    ) -> None:
        await self.db.execute(
            "INSERT INTO user_directory_rooms"
            " (room_id, join_rules_event_id, history_visibility_event_id, is_public)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET"
            " join_rules_event_id = excluded.join_rules_event_id,"
            " history_visibility_event_id = excluded.history_visibility_event_id,"
            " is_public = excluded.is_public",
            room_id,
            join_rules_event_id,
            history_visibility_event_id,
            is_public,
        )

    async def stale_rooms(self) -> list[RoomVisibilitySource]:
        """Rooms whose current join rules / history visibility differ from what the
        table was computed from (new rooms, or changes not yet indexed at a crash)."""
        rows = await self.db.fetch(
            "SELECT c.room_id,"
            " MAX(CASE WHEN c.type = 'm.room.join_rules' THEN c.event_id END),"
            " MAX(CASE WHEN c.type = 'm.room.history_visibility' THEN c.event_id END)"
            " FROM current_state c WHERE c.state_key = ''"
            " AND c.type IN ('m.room.join_rules', 'm.room.history_visibility')"
            " GROUP BY c.room_id"
        )
        known = {
            r[0]: (r[1], r[2])
            for r in await self.db.fetch(
                "SELECT room_id, join_rules_event_id, history_visibility_event_id"
                " FROM user_directory_rooms"
            )
        }
        return [
            RoomVisibilitySource(r[0], r[1], r[2]) for r in rows if known.get(r[0]) != (r[1], r[2])
        ]

    async def set_remote_profile(
        self, user_id: str, displayname: str | None, avatar_url: str | None
    ) -> None:
        await self.db.execute(
            "INSERT INTO user_directory_remote_profiles (user_id, displayname, avatar_url)"
            " VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET"
            " displayname = excluded.displayname, avatar_url = excluded.avatar_url",
            user_id,
            displayname,
            avatar_url,
        )

    async def search(
        self, requester: str, term: str, max_rows: int, *, all_local: bool = False
    ) -> list[DirectoryEntry]:
        """Users visible to `requester` (sharing a joined room, or joined to a public
        room) whose user ID or display name contains `term`, case-insensitively.

        Deactivated and guest local users are left out. Unranked; at most `max_rows`.
        """
        # Every word of the term must match (Synapse's full-text search ANDs the words:
        # "ali smi" finds "Alice Smith"), in the user ID or the display name.
        words = term.lower().split()[:MAX_TERM_WORDS] or [term.lower()]
        patterns = [f"%{_escape_like(w)}%" for w in words]
        matches = " AND ".join(
            f"(LOWER(v.user_id) LIKE ${i} ESCAPE '\\'"
            f" OR LOWER(COALESCE(p.displayname, rp.displayname)) LIKE ${i} ESCAPE '\\')"
            for i in range(3, 3 + len(patterns))
        )
        rows = await self.db.fetch(
            "WITH visible AS ("
            " SELECT m2.user_id FROM room_memberships m1"
            " JOIN room_memberships m2 ON m2.room_id = m1.room_id AND m2.membership = 'join'"
            " WHERE m1.user_id = $1 AND m1.membership = 'join'"
            " UNION"
            " SELECT m.user_id FROM user_directory_rooms r"
            " JOIN room_memberships m ON m.room_id = r.room_id AND m.membership = 'join'"
            " WHERE r.is_public" + (" UNION SELECT user_id FROM users" if all_local else "") + ")"
            " SELECT v.user_id, COALESCE(p.displayname, rp.displayname),"
            " COALESCE(p.avatar_url, rp.avatar_url)"
            " FROM visible v"
            " LEFT JOIN users u ON u.user_id = v.user_id"
            " LEFT JOIN profiles p ON p.user_id = v.user_id"
            " LEFT JOIN user_directory_remote_profiles rp ON rp.user_id = v.user_id"
            " WHERE (u.user_id IS NULL OR (NOT u.deactivated AND NOT u.is_guest))"
            f" AND {matches}"
            " ORDER BY v.user_id LIMIT $2",
            requester,
            max_rows,
            *patterns,
        )
        return [DirectoryEntry(r[0], r[1], r[2]) for r in rows]
