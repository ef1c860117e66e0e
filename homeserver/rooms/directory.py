"""Room aliases and the public room directory.

Aliases live in the core `room_aliases` table; the `rooms.is_public` flag publishes a
room. The public list is built from each published room's current state (name, topic,
avatar, canonical alias, join rule, guest access, history visibility, room type and
joined member count), ordered by member count, and paged with opaque offset tokens.
Remote aliases and other servers' directories are resolved through an optional port
that federation may provide.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from homeserver.config.directory import DirectoryPolicy
from homeserver.errors import MatrixError, forbidden, invalid_param, not_found
from homeserver.graph.power_levels import PowerLevels
from homeserver.ids import server_of
from homeserver.storage import Stores

from .local_events import LocalEvents

MAX_PUBLIC_ROOMS = 10_000
SUMMARY_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.encryption",
)


class RemoteDirectory(Protocol):
    """Resolves an alias on another server (federation's directory query), reads its
    room directory and its view of a space."""

    async def hierarchy(
        self, server: str, room_id: str, suggested_only: bool
    ) -> dict[str, Any] | None:
        """The server's `/hierarchy` answer for `room_id` (shape-checked: `room` is that
        room, `children` a list of summaries), or None."""
        ...

    async def query_alias(self, alias: str) -> tuple[str, list[str]] | None: ...

    async def public_rooms(
        self,
        server: str,
        *,
        limit: int | None,
        since: str | None,
        search_term: str | None,
        room_types: list[str | None] | None,
        include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> dict[str, Any] | None:
        """The server's published room directory (a PublicRoomsResponse), or None
        when it cannot be had (unreachable, refused, nonsense answer)."""
        ...


# How long a built /publicRooms listing is served before it is rebuilt.
PUBLIC_LIST_TTL_S = 5.0
# Listings kept at once (the server's, all networks', one per appservice network asked).
MAX_LISTINGS = 64


class RoomDirectory:
    def __init__(
        self,
        stores: Stores,
        server_name: str,
        remote: RemoteDirectory | None = None,
        local_events: LocalEvents | None = None,
        policy: DirectoryPolicy = DirectoryPolicy(),
    ) -> None:
        # The operator's alias and publication rules (config/directory.py).
        self._policy = policy
        self._stores = stores
        self._server_name = server_name
        self._remote = remote
        # Sends the updated m.room.canonical_alias when an alias it names is deleted.
        self._events = local_events
        # The published rooms' summaries, sorted, shared by every /publicRooms request
        # (anonymous ones included) for PUBLIC_LIST_TTL_S: a request costs a slice of a
        # list, not O(published rooms) of database reads. Publishing or unpublishing a
        # room invalidates it at once; names, topics and member counts may lag by the TTL.
        # Keyed by which list: "" the server's own, "*" with every appservice list,
        # "<appservice>|<network>" one appservice network's list.
        self._listings: dict[str, tuple[int, float, list[dict[str, Any]]]] = {}
        self._listing_lock = asyncio.Lock()

    # -- aliases ----------------------------------------------------------------------------

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """(room_id, servers) of an alias; 404 M_NOT_FOUND if unknown."""
        if server_of(alias) == self._server_name:
            info = await self._stores.rooms.get_alias(alias)
            if info is None:
                raise not_found(f"Room alias {alias} not found")
            hosts = await self._stores.current_state.get_joined_hosts(info.room_id)
            servers = [self._server_name, *sorted(h for h in hosts if h != self._server_name)]
            return info.room_id, servers
        if self._remote is not None:
            found = await self._remote.query_alias(alias)
            if found is not None:
                return found
        raise not_found(f"Room alias {alias} not found")

    async def create_alias(self, alias: str, room_id: str, user_id: str) -> None:
        if server_of(alias) != self._server_name:
            raise invalid_param("Room alias must be on this server")
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found("Unknown room")
        if (
            self._policy.require_membership_for_aliases
            and await self._stores.current_state.get_membership(room_id, user_id) != "join"
            and not await self._is_admin(user_id)  # server admins need not be (Synapse)
        ):
            raise forbidden("You must be in the room to give it an alias")
        self.check_alias_allowed(alias, room_id, user_id)
        if not await self._stores.rooms.create_alias(
            alias, room_id, [self._server_name], creator=user_id
        ):
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")

    def check_alias_allowed(self, alias: str, room_id: str, user_id: str) -> None:
        """alias_creation_rules: 403 when the operator's rules deny it (as Synapse,
        for admins too, with a generic message)."""
        if not self._policy.may_create_alias(user_id, room_id, alias):
            raise MatrixError(403, "M_UNKNOWN", "Not allowed to create alias")

    async def may_publish(self, room_id: str, user_id: str) -> bool:
        """room_list_publication_rules, matched against the room's local aliases and
        its canonical alias and alternatives; server admins may always publish."""
        if await self._is_admin(user_id):
            return True
        aliases = list(await self._stores.rooms.get_aliases_for_room(room_id))
        canonical_id = await self._stores.current_state.get_current_state_event_id(
            room_id, "m.room.canonical_alias", ""
        )
        canonical = await self._stores.events.get_event(canonical_id) if canonical_id else None
        if canonical is not None:
            content = canonical.content
            named = [content.get("alias"), *(content.get("alt_aliases") or [])]
            aliases += [a for a in named if isinstance(a, str)]
        return self._policy.may_publish(user_id, room_id, aliases)

    async def _is_admin(self, user_id: str) -> bool:
        user = await self._stores.accounts.get_user(user_id)
        return user is not None and user.is_admin

    async def delete_alias(self, alias: str, user_id: str) -> None:
        if server_of(alias) != self._server_name:
            raise invalid_param("Room alias must be on this server")
        info = await self._stores.rooms.get_alias(alias)
        if info is None:
            raise not_found(f"Room alias {alias} not found")
        if info.creator != user_id and not await self._can_edit_state(
            info.room_id, user_id, "m.room.canonical_alias"
        ):
            user = await self._stores.accounts.get_user(user_id)
            if user is None or not user.is_admin:
                raise forbidden("You don't have permission to delete the alias")
        await self._stores.rooms.delete_alias(alias)
        await self._drop_from_canonical(info.room_id, alias, user_id)

    async def _drop_from_canonical(self, room_id: str, alias: str, user_id: str) -> None:
        """A deleted alias leaves the room's m.room.canonical_alias too (as Synapse),
        sent as the deleting user; if they may not change it, it stays as it is."""
        if self._events is None:
            return
        event_id = await self._stores.current_state.get_current_state_event_id(
            room_id, "m.room.canonical_alias", ""
        )
        event = await self._stores.events.get_event(event_id) if event_id else None
        if event is None:
            return
        content = dict(event.content)
        changed = False
        if content.get("alias") == alias:
            del content["alias"]
            changed = True
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if changed:
            with contextlib.suppress(MatrixError):
                await self._events.send(room_id, user_id, "m.room.canonical_alias", content, "")

    async def aliases_for_room(self, room_id: str, user_id: str, world_readable: bool) -> list:
        membership = await self._stores.current_state.get_membership(room_id, user_id)
        if not world_readable and membership != "join":
            raise forbidden(f"User {user_id} not in room {room_id}")
        return await self._stores.rooms.get_aliases_for_room(room_id)

    async def _can_edit_state(self, room_id: str, user_id: str, event_type: str) -> bool:
        if await self._stores.current_state.get_membership(room_id, user_id) != "join":
            return False
        ids = await self._stores.current_state.get_current_state_ids(
            room_id, ["m.room.power_levels", "m.room.create"]
        )
        loaded = await self._stores.events.get_events(ids.values())
        levels = PowerLevels(
            loaded.get(ids.get(("m.room.power_levels", ""), "")),
            loaded.get(ids.get(("m.room.create", ""), "")),
        )
        return levels.user_level(user_id) >= levels.event_level(event_type, True)

    # -- publication ------------------------------------------------------------------------

    async def get_visibility(self, room_id: str) -> str:
        info = await self._stores.rooms.get_room(room_id)
        if info is None:
            raise not_found("Unknown room")
        return "public" if info.is_public else "private"

    async def set_visibility(self, room_id: str, user_id: str, visibility: str) -> None:
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found("Unknown room")
        if not await self._can_edit_state(room_id, user_id, "m.room.canonical_alias"):
            user = await self._stores.accounts.get_user(user_id)
            if user is None or not user.is_admin:
                raise forbidden("You don't have permission to change the room's visibility")
        if visibility == "public" and not await self.may_publish(room_id, user_id):
            raise MatrixError(403, "M_UNKNOWN", "Not allowed to publish room")  # Synapse's
        await self._stores.rooms.set_room_is_public(room_id, visibility == "public")

    # -- listing ----------------------------------------------------------------------------

    async def summary_for(self, room_id: str, user_id: str | None) -> dict[str, Any]:
        """`/room_summary` for `user_id` (None: no token): 404 unless the room is public,
        world-readable, open to join or knock, or the user is joined, invited or knocking
        by the room's current state. An out-of-band membership (an invite a server sent
        for a room we are not in, our knock) opens nothing of what we hold of the room:
        any server can send such an invite."""
        info = await self._stores.rooms.get_room(room_id)
        if info is None:
            raise not_found("Room not found")
        summary = await self.room_summary(room_id)
        membership = None
        in_room = False
        if user_id is not None:
            row = await self._stores.current_state.get_membership_info(room_id, user_id)
            if row is not None:
                membership = row.membership
                in_room = not await self._stores.events.is_outlier(row.event_id)
        allowed = (
            (in_room and membership in ("join", "invite", "knock"))
            or summary["world_readable"]
            or summary["join_rule"] in ("public", "knock", "knock_restricted")
            or info.is_public
        )
        if not allowed:
            raise not_found("Room not found")
        if membership is not None:
            summary["membership"] = membership
        return summary

    async def room_summary(self, room_id: str) -> dict[str, Any]:
        """A PublishedRoomsChunk-shaped summary from current state."""
        ids = await self._stores.current_state.get_current_state_ids(room_id, SUMMARY_TYPES)
        loaded = await self._stores.events.get_events(ids.values())

        def content(event_type: str) -> dict[str, Any]:
            ev = loaded.get(ids.get((event_type, ""), ""))
            return ev.content if ev is not None else {}

        entry: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": await self._stores.current_state.get_joined_member_count(room_id),
            "world_readable": content("m.room.history_visibility").get("history_visibility")
            == "world_readable",
            "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
        }
        join_rule = content("m.room.join_rules").get("join_rule")
        entry["join_rule"] = join_rule if isinstance(join_rule, str) else "invite"
        for key, (etype, field) in {
            "name": ("m.room.name", "name"),
            "topic": ("m.room.topic", "topic"),
            "avatar_url": ("m.room.avatar", "url"),
            "canonical_alias": ("m.room.canonical_alias", "alias"),
            "room_type": ("m.room.create", "type"),
        }.items():
            value = content(etype).get(field)
            if isinstance(value, str) and value:
                entry[key] = value
        encryption = content("m.room.encryption").get("algorithm")
        if isinstance(encryption, str):
            entry["encryption"] = encryption
        version = await self._stores.rooms.get_room_version(room_id)
        if version:
            entry["room_version"] = version
        return entry

    async def set_appservice_visibility(
        self, appservice_id: str, network_id: str, room_id: str, visibility: str
    ) -> None:
        """PUT /directory/list/appservice/{networkId}/{roomId} (as_token only)."""
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found("Unknown room")
        await self._stores.rooms.set_appservice_listing(
            appservice_id, network_id, room_id, visibility == "public"
        )

    async def public_rooms(
        self,
        *,
        limit: int | None,
        since: str | None,
        search_term: str | None,
        room_types: list[str | None] | None = None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
    ) -> dict[str, Any]:
        """The server's list; with `include_all_networks` also every appservice network's
        list; with `third_party_instance_id` ("<appservice>|<network>") only that one.
        Empty for everyone with enable_room_list_search off."""
        if not self._policy.room_list_search:
            return {"chunk": [], "total_room_count_estimate": 0}
        offset = _parse_since(since)
        key = third_party_instance_id or ("*" if include_all_networks else "")
        entries = await self._published(key)
        total = len(entries)
        if search_term:
            term = search_term.casefold()
            entries = [
                e
                for e in entries
                if any(
                    term in str(e.get(k, "")).casefold()
                    for k in ("name", "topic", "canonical_alias", "room_id")
                )
            ]
        if room_types is not None:
            entries = [e for e in entries if e.get("room_type") in room_types]
        end = len(entries) if limit is None else offset + limit
        body: dict[str, Any] = {
            "chunk": entries[offset:end],
            "total_room_count_estimate": total,
        }
        if end < len(entries):
            body["next_batch"] = f"o{end}"
        if offset > 0:
            body["prev_batch"] = f"o{max(0, offset - (limit or offset))}"
        return body

    async def _published(self, key: str = "") -> list[dict[str, Any]]:
        """Every published room's summary of one list, biggest first (cached, see
        __init__; at most MAX_LISTINGS lists are kept)."""
        version = self._stores.rooms.directory_version
        listing = self._listings.get(key)
        if listing is not None and listing[0] == version and listing[1] > time.monotonic():
            return listing[2]
        async with self._listing_lock:  # concurrent requests share one rebuild
            listing = self._listings.get(key)
            if listing is not None and listing[0] == version and listing[1] > time.monotonic():
                return listing[2]
            rooms = self._stores.rooms
            room_ids: list[str] = []
            if key in ("", "*"):
                room_ids = await rooms.get_public_room_ids(limit=MAX_PUBLIC_ROOMS)
            if key == "*":
                room_ids += await rooms.get_appservice_listed_room_ids(None, MAX_PUBLIC_ROOMS)
            elif key:
                appservice, _, network = key.partition("|")
                room_ids = await rooms.get_appservice_listed_room_ids(
                    (appservice, network), MAX_PUBLIC_ROOMS
                )
            entries = [await self.room_summary(r) for r in dict.fromkeys(room_ids)]
            entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
            if len(self._listings) >= MAX_LISTINGS:
                self._listings.clear()
            self._listings[key] = (version, time.monotonic() + PUBLIC_LIST_TTL_S, entries)
            return entries

    async def remote_public_rooms(
        self,
        server: str,
        *,
        limit: int | None,
        since: str | None,
        search_term: str | None,
        room_types: list[str | None] | None = None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
    ) -> dict[str, Any]:
        """Another server's published room directory, asked over federation; its
        `since` tokens are its own and passed through untouched."""
        if self._remote is None:
            raise not_found("Remote room directories are not available")
        if not self._policy.room_list_search:
            return {"chunk": [], "total_room_count_estimate": 0}
        body = await self._remote.public_rooms(
            server,
            limit=limit,
            since=since,
            search_term=search_term,
            room_types=room_types,
            include_all_networks=include_all_networks,
            third_party_instance_id=third_party_instance_id,
        )
        if body is None:
            raise MatrixError(502, "M_UNKNOWN", f"Failed to fetch the room list of {server}")
        return body


def _parse_since(since: str | None) -> int:
    if not since:
        return 0
    digits = since[1:]
    if since[0] != "o" or not digits.isdigit() or len(digits) > 9:
        raise invalid_param("Invalid since token")
    return int(digits)
