"""Core ports answered with federation queries (adapters over `FederationQueries`).

- `RemoteProfilesAdapter`: homeserver.profiles.ports.RemoteProfiles (`query/profile`);
- `RemoteDirectoryAdapter`: homeserver.rooms.directory.RemoteDirectory
  (`query/directory`, `publicRooms`).
Both turn every failure (the remote says 404, cannot be reached, answers nonsense) into
None: the core then answers its own 404 instead of a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from federation.client import FederationError
from federation.queries import FederationQueries
from homeserver.profiles.ports import RemoteProfiles
from homeserver.rooms.directory import RemoteDirectory

log = logging.getLogger(__name__)

FAILURES = (FederationError, ValueError, LookupError)


class RemoteProfilesAdapter:
    def __init__(self, queries: FederationQueries) -> None:
        self._queries = queries

    async def query_profile(self, user_id: str, field: str | None = None) -> dict[str, Any] | None:
        try:
            return await self._queries.profile(user_id, field)
        except FAILURES as e:
            log.info("profile query for %s failed: %s", user_id, e)
            return None


class RemoteDirectoryAdapter:
    def __init__(self, queries: FederationQueries) -> None:
        self._queries = queries

    async def query_alias(self, alias: str) -> tuple[str, list[str]] | None:
        try:
            room_id, servers = await self._queries.directory(alias)
        except FAILURES as e:
            log.info("directory query for %s failed: %s", alias, e)
            return None
        server = alias.partition(":")[2]
        # The alias's server can always be asked to help us join.
        return room_id, list(dict.fromkeys([*servers, server]))

    async def public_rooms(self, server: str, **options: Any) -> dict[str, Any] | None:
        try:
            return await self._queries.public_rooms(server, **options)
        except FAILURES as e:
            log.info("publicRooms query to %s failed: %s", server, e)
            return None

    async def hierarchy(
        self, server: str, room_id: str, suggested_only: bool
    ) -> dict[str, Any] | None:
        try:
            body = await self._queries.hierarchy(server, room_id, suggested_only)
        except FAILURES as e:
            log.info("hierarchy query to %s for %s failed: %s", server, room_id, e)
            return None
        room = body.get("room")
        children = body.get("children", [])
        if (
            not isinstance(room, dict)
            or room.get("room_id") != room_id
            or not isinstance(room.get("children_state", []), list)
            or not isinstance(children, list)
        ):
            log.info("hierarchy answer from %s for %s has the wrong shape", server, room_id)
            return None
        return {"room": room, "children": [c for c in children if isinstance(c, dict)]}


def _check_protocols(q: FederationQueries) -> tuple[RemoteProfiles, RemoteDirectory]:
    return RemoteProfilesAdapter(q), RemoteDirectoryAdapter(q)
