"""What happens to an existing account: password change, deactivation, whois."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.sessions import SessionService
from homeserver.errors import forbidden, not_found
from homeserver.rooms.membership import MembershipService
from homeserver.storage import AccountStore, CurrentStateStore

logger = logging.getLogger(__name__)

# Memberships a deactivated user is taken out of.
LEAVE_MEMBERSHIPS = ("join", "invite", "knock")


class AccountLifecycle:
    def __init__(
        self,
        accounts: AccountStore,
        current_state: CurrentStateStore,
        membership: MembershipService,
        hasher: PasswordHasher,
        sessions: SessionService,
        remove_pushers: Callable[[str], Awaitable[Any]] | None = None,
        unbind_threepids: Callable[[str], Awaitable[bool]] | None = None,
        forget_account_data: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        # AccountDataService.forget_user: the account's data and tags go with it.
        self._forget_account_data = forget_account_data
        # IdentityBinds.unbind_all: identity servers forget the account's 3PIDs.
        self._unbind_threepids = unbind_threepids
        # PushStore.delete_pushers_of: a deactivated account's phones hear nothing more.
        self._remove_pushers = remove_pushers
        self._accounts = accounts
        self._current_state = current_state
        self._membership = membership
        self._hasher = hasher
        self._sessions = sessions

    async def change_password(
        self, user_id: str, new_password: str, *, logout_devices: bool, keep_device: str | None
    ) -> None:
        """Set a new password; with `logout_devices`, every other device is logged out."""
        password_hash = await self._hasher.hash(new_password)
        await self._accounts.set_password_hash(user_id, password_hash)
        if logout_devices:
            await self._accounts.delete_tokens_except_device(user_id, keep_device)

    async def deactivate(self, user_id: str, *, erase: bool = False) -> str:
        """Lock the account for good: no password, tokens, devices or account data; leave
        every room.

        The account is locked first so nothing new happens while we leave rooms; a room
        we fail to leave is logged and skipped (the membership stays, the account cannot
        use it). `erase` also blanks the profile and marks the user erased: their
        messages are shown redacted to anyone who was not in the room when they were
        sent (users who join later, servers asking over federation), as Synapse does.

        Returns `id_server_unbind_result`: "success" when every identity server we
        bound a 3PID at forgot it, else "no-support".
        """
        devices = [d.device_id for d in await self._accounts.get_devices(user_id)]
        await self._accounts.deactivate(user_id)
        await self._sessions.run_device_hooks(user_id, devices)
        if self._remove_pushers is not None:
            await self._remove_pushers(user_id)
        memberships = await self._current_state.get_memberships_for_user(user_id, LEAVE_MEMBERSHIPS)
        for info in memberships:
            try:
                await self._membership.set_membership(info.room_id, user_id, user_id, "leave")
            except Exception:
                logger.exception("deactivating %s: could not leave %s", user_id, info.room_id)
        await self._accounts.set_displayname(user_id, None)
        await self._accounts.set_avatar_url(user_id, None)
        if self._forget_account_data is not None:
            await self._forget_account_data(user_id)
        if erase:
            await self._accounts.set_erased(user_id, True)
            profile = await self._accounts.get_profile(user_id)
            for key in profile.custom if profile else {}:
                await self._accounts.set_profile_field(user_id, key, None)
        unbound = True
        if self._unbind_threepids is not None:
            unbound = await self._unbind_threepids(user_id)
        return "success" if unbound else "no-support"

    async def whois(self, requester: str, user_id: str) -> dict[str, Any]:
        """GET /admin/whois: the user's devices and where they were last seen."""
        if requester != user_id:
            info = await self._accounts.get_user(requester)
            if info is None or not info.is_admin:
                raise forbidden("You are not a server admin")
        if await self._accounts.get_user(user_id) is None:
            raise not_found("Unknown user")
        devices: dict[str, Any] = {}
        for device in await self._accounts.get_devices(user_id):
            connection: dict[str, Any] = {}
            if device.last_seen_ip is not None:
                connection["ip"] = device.last_seen_ip
            if device.last_seen_ts is not None:
                connection["last_seen"] = device.last_seen_ts
            if device.last_seen_user_agent is not None:
                connection["user_agent"] = device.last_seen_user_agent
            sessions = [{"connections": [connection] if connection else []}]
            devices[device.device_id] = {"sessions": sessions}
        return {"user_id": user_id, "devices": devices}
