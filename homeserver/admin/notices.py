"""Server notices: messages from the server to a user (Synapse's send_server_notice).

Configured as in Synapse (`server_notices` section): a local "system" user
(created on first use with the configured display name and avatar) talks to each user
in one private, unfederated room, tagged `m.server_notice` for the user, where only
the system user may speak. The room is kept per user and reused; if the user left it,
they are invited again (and with `auto_join`, joined).
"""

from __future__ import annotations

from typing import Any

from homeserver.config import ServerNoticesConfig
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.errors import MatrixError, not_found
from homeserver.rooms.creation import RoomCreator, RoomSpec
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.storage import Stores
from homeserver.storage.admin_rooms import AdminRoomStore

SERVER_NOTICE_TAG = "m.server_notice"


class ServerNotices:
    def __init__(
        self,
        config: ServerNoticesConfig | None,
        server_name: str,
        room_version: str,
        stores: Stores,
        admin_rooms: AdminRoomStore,
        creator: RoomCreator,
        membership: MembershipService,
        local_events: LocalEvents,
        account_data: AccountDataService,
    ) -> None:
        self._config = config
        self._server_name = server_name
        self._room_version = room_version
        self._stores = stores
        self._admin_rooms = admin_rooms
        self._creator = creator
        self._membership = membership
        self._events = local_events
        self._account_data = account_data

    @property
    def system_user(self) -> str | None:
        if self._config is None:
            return None
        return f"@{self._config.system_mxid_localpart}:{self._server_name}"

    async def room_of(self, user_id: str) -> str | None:
        """The user's notice room, if one was made (None: no notice sent yet)."""
        return await self._admin_rooms.get_notice_room(user_id)

    async def send(
        self,
        user_id: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        txn: tuple[str, str | None, str] | None = None,
    ) -> str:
        """Send one notice to a local user; returns the event ID."""
        system = self.system_user
        if self._config is None or system is None:
            raise MatrixError(400, "M_UNKNOWN", "Server notices are not enabled on this server")
        if user_id.partition(":")[2] != self._server_name:
            raise MatrixError(400, "M_UNKNOWN", "Server notices can only be sent to local users")
        target = await self._stores.accounts.get_user(user_id)
        if target is None:
            raise not_found("User not found")
        if target.deactivated:
            raise MatrixError(400, "M_UNKNOWN", "Cannot send a server notice to a deactivated user")
        await self._ensure_system_user(system)
        room_id = await self._room_for(user_id, system)
        event = await self._events.send(room_id, system, event_type, content, state_key, txn=txn)
        return event.event_id

    async def _ensure_system_user(self, system: str) -> None:
        assert self._config is not None
        if await self._stores.accounts.get_user(system) is not None:
            return
        await self._stores.accounts.create_user(
            system, None, displayname=self._config.system_mxid_display_name
        )
        if self._config.system_mxid_avatar_url:
            await self._stores.accounts.set_avatar_url(system, self._config.system_mxid_avatar_url)

    async def _room_for(self, user_id: str, system: str) -> str:
        """The user's notice room: reused while it exists, re-invited if they left."""
        room_id = await self._admin_rooms.get_notice_room(user_id)
        if room_id is not None and await self._stores.rooms.get_room_version(room_id) is not None:
            membership = await self._stores.current_state.get_membership(room_id, user_id)
            if membership not in ("join", "invite"):
                await self._membership.invite(room_id, system, user_id, {})
                await self._maybe_join(room_id, user_id)
            return room_id
        room_id = await self._create_room(user_id, system)
        await self._admin_rooms.set_notice_room(user_id, room_id)
        return room_id

    async def _create_room(self, user_id: str, system: str) -> str:
        assert self._config is not None
        spec = RoomSpec(
            room_version=self._room_version,
            preset="private_chat",
            name=self._config.room_name,
            topic=self._config.room_topic,
            creation_content={"m.federate": False},
            power_level_content_override={"users_default": -10},
        )
        if self._config.room_avatar_url:
            spec.initial_state.append(
                {
                    "type": "m.room.avatar",
                    "state_key": "",
                    "content": {"url": self._config.room_avatar_url},
                }
            )
        member_content = await self._membership.profile_content(system)
        room_id = await self._creator.create_room(system, spec, member_content)
        await self._membership.invite(room_id, system, user_id, {})
        await self._account_data.set_tag(user_id, room_id, SERVER_NOTICE_TAG, {})
        await self._maybe_join(room_id, user_id)
        return room_id

    async def _maybe_join(self, room_id: str, user_id: str) -> None:
        assert self._config is not None
        if self._config.auto_join:
            await self._membership.join(room_id, user_id)
