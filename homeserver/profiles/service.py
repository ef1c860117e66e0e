"""ProfileService: read and change profiles, and mirror changes into room memberships.

A display name or avatar change is also a new `m.room.member` (join) event in every room
the user is joined to, so other members see it (the spec's "propagated as membership
updates"). Each room is updated on its own: one room refusing the event (say, a power
level forbids it) is logged and does not undo the profile change or the other rooms.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.moderation import Moderation
from homeserver.rooms.local_events import LocalEvents
from homeserver.storage import Profile, Stores

from .fields import (
    AVATAR_URL,
    DISPLAYNAME,
    MEMBER_FIELDS,
    check_key,
    check_profile_size,
    check_value,
)
from .policy import ProfilePolicy
from .ports import RemoteProfiles

log = logging.getLogger(__name__)


def profile_fields(profile: Profile) -> dict[str, Any]:
    """The profile as the client API shows it: custom fields plus the set standard ones."""
    fields: dict[str, Any] = dict(profile.custom)
    if profile.displayname is not None:
        fields[DISPLAYNAME] = profile.displayname
    if profile.avatar_url is not None:
        fields[AVATAR_URL] = profile.avatar_url
    return fields


class ProfileService:
    def __init__(
        self,
        stores: Stores,
        local_events: LocalEvents,
        server_name: str,
        remote: RemoteProfiles | None = None,
        moderation: Moderation | None = None,
        policy: ProfilePolicy | None = None,
    ) -> None:
        self._policy = policy  # the operator's avatar limits (policy.py)
        self._stores = stores
        self._events = local_events
        self._server_name = server_name
        # Admin decisions: suspended users may not change their profile.
        self._moderation = moderation
        self._remote = remote

    def is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    # -- reading ------------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """Every field of a user's profile; 404 M_NOT_FOUND for unknown users."""
        if not self.is_local(user_id):
            return await self._remote_profile(user_id, None)
        if await self._stores.accounts.get_user(user_id) is None:
            raise not_found("Profile not found")
        profile = await self._stores.accounts.get_profile(user_id)
        return {} if profile is None else profile_fields(profile)

    async def get_field(self, user_id: str, key: str) -> Any:
        """One field's value; 404 M_NOT_FOUND if the user does not exist.

        A local user's unset displayname or avatar_url is null (200 `{key: null}`), as
        Synapse answers; other unset fields, and a remote server's answer without the
        field, are 404.
        """
        check_key(key)
        if not self.is_local(user_id):
            fields = await self._remote_profile(user_id, key)
            if key not in fields:
                raise not_found("Profile field not found")
            return fields[key]
        fields = await self.get_profile(user_id)
        if key not in fields and key not in ("displayname", "avatar_url"):
            raise not_found("Profile field not found")
        return fields.get(key)

    async def _remote_profile(self, user_id: str, key: str | None) -> dict[str, Any]:
        remote = self._remote
        if remote is None:
            raise not_found("Profile not found: remote profiles are not available")
        result = await remote.query_profile(user_id, key)
        if not isinstance(result, dict):
            raise not_found("Profile not found")
        return result

    # -- writing ------------------------------------------------------------------------

    async def _check_editable(self, requester: str | None, user_id: str) -> None:
        """`requester` None: a server admin's change (the admin API), allowed for anyone."""
        if requester is not None:
            if requester != user_id:
                raise forbidden("You may only change your own profile")
            if self._moderation is not None:
                self._moderation.check_not_suspended(user_id, "Changing the profile")
        if await self._stores.accounts.get_user(user_id) is None:
            raise not_found("Profile not found")

    async def set_field(self, requester: str | None, user_id: str, key: str, value: Any) -> None:
        """Set one field (for displayname/avatar_url, "" unsets) and propagate it.
        `requester` None is a server admin acting on the user's behalf."""
        check_key(key)
        await self._check_editable(requester, user_id)
        value = check_value(key, value)
        if key == AVATAR_URL and self._policy is not None:
            await self._policy.check_avatar(value)
        profile = await self._stores.accounts.get_profile(user_id)
        fields = {} if profile is None else profile_fields(profile)
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
        check_profile_size(fields)
        await self._store(user_id, key, value)
        if key in MEMBER_FIELDS:
            await self.propagate(user_id)

    async def delete_field(self, requester: str | None, user_id: str, key: str) -> None:
        """Remove a field (absent fields are fine) and propagate a member-field removal."""
        check_key(key)
        await self._check_editable(requester, user_id)
        await self._store(user_id, key, None)
        if key in MEMBER_FIELDS:
            await self.propagate(user_id)

    async def _store(self, user_id: str, key: str, value: Any) -> None:
        accounts = self._stores.accounts
        if key == DISPLAYNAME:
            await accounts.set_displayname(user_id, value)
        elif key == AVATAR_URL:
            await accounts.set_avatar_url(user_id, value)
        else:
            await accounts.set_profile_field(user_id, key, value)

    async def propagate(self, user_id: str) -> int:
        """Send an updated join event into each joined room whose copy is stale.

        Returns how many rooms got a new event.
        """
        profile = await self._stores.accounts.get_profile(user_id)
        wanted: dict[str, Any] = {}
        if profile is not None:
            if profile.displayname is not None:
                wanted[DISPLAYNAME] = profile.displayname
            if profile.avatar_url is not None:
                wanted[AVATAR_URL] = profile.avatar_url
        updated = 0
        for room_id in await self._stores.current_state.get_rooms_for_user(user_id, ("join",)):
            try:
                if await self._update_room(room_id, user_id, wanted):
                    updated += 1
            except MatrixError as exc:
                log.warning("profile update of %s not sent to %s: %s", user_id, room_id, exc)
        return updated

    async def _update_room(self, room_id: str, user_id: str, wanted: dict[str, Any]) -> bool:
        current_id = await self._stores.current_state.get_current_state_event_id(
            room_id, "m.room.member", user_id
        )
        current = await self._stores.events.get_event(current_id) if current_id else None
        if current is not None:
            have = {k: current.content.get(k) for k in MEMBER_FIELDS if k in current.content}
            if have == wanted:
                return False
        content = {"membership": "join", **wanted}
        await self._events.send(room_id, user_id, "m.room.member", content, user_id)
        return True
