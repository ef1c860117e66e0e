"""The rooms every new user joins (Synapse's `auto_join_rooms`): a community's
#welcome and #announcements, joined right after registration (and after a first
single sign-on; guests with `auto_join_rooms_for_guests`).

A local alias nobody has made yet is created on first use (`autocreate_auto_join_rooms`)
by `auto_join_mxid_localpart`'s user (made if missing; for a private preset it invites
each new user) or else by the first new user, published in the room directory when
public. A room that cannot be joined is logged and skipped: registration never fails
for it. Creation is one at a time per alias in this process, so two users registering
at once make one room (across processes, the one that aliases it first wins and the
others' rooms are left by their creators).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from homeserver.config.accounts_model import AutoJoinConfig
from homeserver.errors import MatrixError
from homeserver.rooms.creation import RoomCreator, RoomSpec
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.membership import MembershipService
from homeserver.storage import Stores

log = logging.getLogger(__name__)

AliasResolver = Callable[[str], Awaitable[tuple[str, list[str]]]]


class AutoJoin:
    def __init__(
        self,
        config: AutoJoinConfig,
        server_name: str,
        room_version: str,
        stores: Stores,
        membership: MembershipService,
        creator: RoomCreator,
    ) -> None:
        self._config = config
        self._server_name = server_name
        self._room_version = room_version
        self._stores = stores
        self._membership = membership
        self._creator = creator
        self._per_alias = KeyedLock()
        self._resolve_remote: AliasResolver | None = None

    def bind(self, resolve_remote: AliasResolver) -> None:
        """Other servers' aliases are asked of them (the room directory, built later)."""
        self._resolve_remote = resolve_remote

    async def new_user(self, user_id: str, *, guest: bool = False) -> None:
        if guest and not self._config.for_guests:
            return
        for target in self._config.rooms:
            try:
                await self._join(user_id, target, guest)
            except Exception as exc:  # a room we cannot join must not fail registration
                log.warning("auto-join of %s to %s failed: %s", user_id, target, exc)

    async def _join(self, user_id: str, target: str, guest: bool) -> None:
        servers: list[str] = [target.rpartition(":")[2]]
        if target.startswith("!"):
            room_id = target
        elif target.endswith(f":{self._server_name}"):
            async with self._per_alias.hold(target):
                info = await self._stores.rooms.get_alias(target)
                if info is None:
                    if not self._config.autocreate:
                        raise MatrixError(404, "M_NOT_FOUND", "No such alias")
                    creator = self._creator_id() or user_id
                    created = await self._create(target, creator)
                    if created is not None and creator == user_id:
                        return  # the creator is in already
                    # Else: made by the system user, or by another process a moment ago.
                    info = await self._stores.rooms.get_alias(target)
                    if info is None:
                        raise MatrixError(404, "M_NOT_FOUND", "No such alias")
                room_id, servers = info.room_id, list(info.servers)
        else:
            if self._resolve_remote is None:
                raise MatrixError(404, "M_NOT_FOUND", "Other servers' aliases are not resolved")
            room_id, servers = await self._resolve_remote(target)
        inviter = self._creator_id()
        if self._config.preset != "public_chat" and inviter is not None:
            await self._membership.invite(room_id, inviter, user_id, {})
        await self._membership.join(room_id, user_id, servers, guest=guest)

    def _creator_id(self) -> str | None:
        localpart = self._config.creator_localpart
        return None if localpart is None else f"@{localpart}:{self._server_name}"

    async def _create(self, alias: str, creator: str) -> str | None:
        """The new room's ID; None when another process took the alias meanwhile (the
        room made here is then left: its creator leaves it)."""
        if creator == self._creator_id() and await self._stores.accounts.get_user(creator) is None:
            await self._stores.accounts.create_user(
                creator, None, displayname=creator[1:].split(":")[0]
            )
        public = self._config.preset == "public_chat"
        spec = RoomSpec(
            room_version=self._room_version,
            preset=self._config.preset,
            visibility="public" if public else "private",
            name=alias[1:].partition(":")[0],
            alias=alias,
            creation_content={} if self._config.federated else {"m.federate": False},
        )
        content = await self._membership.profile_content(creator)
        room_id = await self._creator.create_room(creator, spec, content)
        if not await self._stores.rooms.create_alias(alias, room_id, [self._server_name], creator):
            log.warning("auto-join room %s: %s was taken meanwhile; leaving it", room_id, alias)
            await self._membership.set_membership(room_id, creator, creator, "leave")
            return None
        if public:
            await self._stores.rooms.set_room_is_public(room_id, True)
        log.info("created auto-join room %s as %s", alias, room_id)
        return room_id
