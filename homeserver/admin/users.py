"""Accounts as server admins see and change them (Synapse's user admin API).

Answers are Synapse's JSON shapes, so admin tools written for Synapse work unchanged.
Only local users can be changed; a user ID of another server is a 400, an unknown
local user a 404.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from homeserver.accounts import tokens
from homeserver.accounts.lifecycle import AccountLifecycle
from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.sessions import LastSeenTracker, SessionService
from homeserver.accounts.threepids import canonical_email
from homeserver.errors import MatrixError, bad_json, invalid_param, not_found
from homeserver.ids import MAX_ID_LENGTH, check_new_localpart
from homeserver.moderation import Moderation
from homeserver.profiles.service import ProfileService
from homeserver.ratelimit import RateLimiters, override_limit
from homeserver.storage import AccountStore, CurrentStateStore
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.admin_users import (
    AdminUser,
    AdminUserStore,
    RateLimitOverride,
    UserFilter,
)
from homeserver.storage.push import PushStore
from homeserver.storage.sso import SsoStore
from homeserver.storage.threepids import ThreepidStore, UserThreepid
from homeserver.storage.user_consent import ConsentStore

from .paging import Page, page_json

USER_TYPES = (None, "bot", "support")
MAX_DISPLAYNAME = 256
MAX_AVATAR_URL = 1000


def user_json(user: AdminUser, *, seconds: bool = False) -> dict[str, Any]:
    """Synapse's user object; `seconds`: creation_ts in seconds (GET /v2/users/<id>)."""
    return {
        "name": user.name,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "is_guest": user.is_guest,
        "admin": user.admin,
        "user_type": user.user_type,
        "deactivated": user.deactivated,
        "erased": user.erased,
        "shadow_banned": user.shadow_banned,
        "locked": user.locked,
        "suspended": user.suspended,
        "creation_ts": user.creation_ts // 1000 if seconds else user.creation_ts,
        "last_seen_ts": user.last_seen_ts,
    }


@dataclass(frozen=True)
class UserChanges:
    """The fields of PUT /v2/users/<id> (None: leave as it is)."""

    password: str | None = None
    logout_devices: bool = True
    displayname: str | None = None
    avatar_url: str | None = None
    admin: bool | None = None
    deactivated: bool | None = None
    locked: bool | None = None
    user_type: str | None = None
    set_user_type: bool = False
    # The user's whole set of email addresses (canonical), replacing theirs.
    threepids: tuple[str, ...] | None = None


class AdminUsers:
    def __init__(
        self,
        server_name: str,
        store: AdminUserStore,
        accounts: AccountStore,
        current_state: CurrentStateStore,
        moderation: Moderation,
        limiters: RateLimiters,
        lifecycle: AccountLifecycle,
        sessions: SessionService,
        hasher: PasswordHasher,
        profiles: ProfileService,
        push: PushStore,
        account_data: AccountDataStore,
        last_seen: LastSeenTracker,
        threepids: ThreepidStore,
        consent: ConsentStore,
        sso: SsoStore,
    ) -> None:
        self._sso = sso
        self._threepids = threepids
        self._consent = consent
        self._server_name = server_name
        self._store = store
        self._accounts = accounts
        self._current_state = current_state
        self._moderation = moderation
        self._limiters = limiters
        self._lifecycle = lifecycle
        self._sessions = sessions
        self._hasher = hasher
        self._profiles = profiles
        self._push = push
        self._account_data = account_data
        # Devices' last-seen times are written behind: flushed before they are read.
        self._last_seen = last_seen

    # -- lookups ----------------------------------------------------------------------

    def check_local(self, user_id: str, what: str = "look up") -> None:
        if user_id.partition(":")[2] != self._server_name:
            raise MatrixError(400, "M_INVALID_PARAM", f"Can only {what} local users")

    async def existing(self, user_id: str, what: str = "look up") -> AdminUser:
        self.check_local(user_id, what)
        user = await self._store.get_user(user_id)
        if user is None:
            raise not_found("User not found")
        return user

    async def list_users(
        self, page: Page, user_filter: UserFilter, order_by: str, descending: bool
    ) -> dict[str, Any]:
        await self._last_seen.flush()
        users, total = await self._store.list_users(
            page.start, page.limit, user_filter, order_by, descending
        )
        body = {"users": [user_json(u) for u in users], "total": total}
        return page_json(body, page, len(users), total, as_string=True)

    async def get_user(self, user_id: str) -> dict[str, Any]:
        await self._last_seen.flush()
        user = await self.existing(user_id)
        return await self._details(user)

    # -- create or modify -------------------------------------------------------------

    async def put_user(
        self, admin_id: str, user_id: str, changes: UserChanges
    ) -> tuple[bool, dict[str, Any]]:
        """Create the user (True) or change it (False); answers the user's details."""
        self.check_local(user_id, "create or modify")
        if changes.threepids is not None:
            for address in changes.threepids:  # refused before anything changes
                if await self._threepids.user_of("email", address) not in (None, user_id):
                    raise MatrixError(400, "M_THREEPID_IN_USE", f"{address} is in use")
        user = await self._store.get_user(user_id)
        if user is None:
            await self._create(user_id, changes)
        else:
            await self._modify(admin_id, user, changes)
        if changes.threepids is not None:
            await self._set_threepids(user_id, changes.threepids)
        created = user is None
        updated = await self._store.get_user(user_id)
        assert updated is not None
        return created, await self._details(updated)

    async def _create(self, user_id: str, changes: UserChanges) -> None:
        localpart = user_id[1:].partition(":")[0]
        try:
            check_new_localpart(localpart)
        except ValueError as exc:
            raise MatrixError(400, "M_INVALID_USERNAME", str(exc)) from None
        if len(user_id.encode("utf-8")) > MAX_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID is too long")
        password_hash = None
        if changes.password is not None:
            password_hash = await self._hasher.hash(changes.password)
        displayname = changes.displayname if changes.displayname else localpart
        if not await self._accounts.create_user(
            user_id, password_hash, is_admin=bool(changes.admin), displayname=displayname
        ):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        if changes.avatar_url:
            await self._accounts.set_avatar_url(user_id, changes.avatar_url)
        if changes.set_user_type:
            await self._store.set_user_type(user_id, changes.user_type)
        if changes.locked:
            await self._moderation.set_flag(user_id, "locked", True)
        if changes.deactivated:
            await self._lifecycle.deactivate(user_id)

    async def _modify(self, admin_id: str, user: AdminUser, changes: UserChanges) -> None:
        user_id = user.name
        if changes.admin is not None and changes.admin != user.admin:
            if user_id == admin_id and not changes.admin:
                raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself.")
            await self._accounts.set_admin(user_id, changes.admin)
        if changes.displayname is not None and changes.displayname != (user.displayname or ""):
            await self._profiles.set_field(None, user_id, "displayname", changes.displayname)
        if changes.avatar_url is not None and changes.avatar_url != (user.avatar_url or ""):
            await self._profiles.set_field(None, user_id, "avatar_url", changes.avatar_url)
        if changes.set_user_type and changes.user_type != user.user_type:
            await self._store.set_user_type(user_id, changes.user_type)
        if changes.locked is not None and changes.locked != user.locked:
            await self._moderation.set_flag(user_id, "locked", changes.locked)
        deactivating = changes.deactivated is True and not user.deactivated
        reactivating = changes.deactivated is False and user.deactivated
        if deactivating:
            await self._lifecycle.deactivate(user_id)
        elif reactivating:
            if changes.password is None:
                raise MatrixError(
                    400, "M_UNKNOWN", "Must provide a password to re-activate an account."
                )
            await self._store.reactivate(user_id)
            await self._accounts.set_erased(user_id, False)
            await self._accounts.set_password_hash(
                user_id, await self._hasher.hash(changes.password)
            )
        elif changes.password is not None and not user.deactivated:
            await self._lifecycle.change_password(
                user_id, changes.password, logout_devices=changes.logout_devices, keep_device=None
            )

    async def _details(self, user: AdminUser) -> dict[str, Any]:
        body = _details(user, await self._threepids.of_user(user.name))
        body["external_ids"] = [
            {"auth_provider": provider, "external_id": external}
            for provider, external in await self._sso.of_user(user.name)
        ]
        consent = await self._consent.get(user.name)
        if consent is not None:
            body["consent_version"], body["consent_ts"] = consent
        return body

    async def _set_threepids(self, user_id: str, addresses: tuple[str, ...]) -> None:
        current = {t.address for t in await self._threepids.of_user(user_id) if t.medium == "email"}
        for address in current - set(addresses):
            await self._threepids.remove(user_id, "email", address)
        now = int(time.time() * 1000)
        for address in set(addresses) - current:
            if not await self._threepids.add(user_id, "email", address, now, now):
                raise MatrixError(400, "M_THREEPID_IN_USE", f"{address} is in use")

    async def user_of_threepid(self, medium: str, address: str) -> dict[str, str]:
        """GET /v1/threepid/<medium>/users/<address>: who holds the address."""
        user_id = None
        if medium == "email":
            try:
                user_id = await self._threepids.user_of(medium, canonical_email(address))
            except MatrixError:
                user_id = None
        if user_id is None:
            raise MatrixError(404, "M_NOT_FOUND", "User not found")
        return {"user_id": user_id}

    async def user_of_external_id(self, provider: str, external_id: str) -> dict[str, str]:
        """GET /v1/auth_providers/<provider>/users/<external id>: who signs in as it."""
        user_id = await self._sso.user_of(provider, external_id)
        if user_id is None:
            raise MatrixError(404, "M_NOT_FOUND", "User not found")
        return {"user_id": user_id}

    # -- account actions --------------------------------------------------------------

    async def deactivate(self, user_id: str, *, erase: bool) -> dict[str, Any]:
        await self.existing(user_id, "deactivate")
        unbind_result = await self._lifecycle.deactivate(user_id, erase=erase)
        if erase:
            await self._moderation.set_flag(user_id, "erased", True)
        return {"id_server_unbind_result": unbind_result}

    async def reset_password(self, user_id: str, password: str, logout_devices: bool) -> None:
        user = await self.existing(user_id, "reset the password of")
        if user.deactivated:
            raise MatrixError(400, "M_UNKNOWN", "Cannot reset the password of a deactivated user")
        await self._lifecycle.change_password(
            user_id, password, logout_devices=logout_devices, keep_device=None
        )

    async def set_admin(self, admin_id: str, user_id: str, admin: bool) -> None:
        await self.existing(user_id, "change the admin status of")
        if user_id == admin_id and not admin:
            raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself.")
        await self._accounts.set_admin(user_id, admin)

    async def get_admin(self, user_id: str) -> bool:
        return (await self.existing(user_id)).admin

    async def set_flag(self, user_id: str, flag: str, value: bool) -> None:
        await self.existing(user_id, "moderate")
        await self._moderation.set_flag(user_id, flag, value)

    async def login_as(self, admin_id: str, user_id: str, valid_until_ms: int | None) -> str:
        """A device-less access token for `user_id` (support staff acting for a user)."""
        await self.existing(user_id, "log in as")
        if user_id == admin_id:
            raise MatrixError(400, "M_UNKNOWN", "Cannot use admin API to login as self")
        token = tokens.access_token()
        await self._accounts.add_access_token(token, user_id, None, valid_until_ms=valid_until_ms)
        return token

    async def whois(self, admin_id: str, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        await self._last_seen.flush()
        return await self._lifecycle.whois(admin_id, user_id)

    # -- rate limits ------------------------------------------------------------------

    async def get_ratelimit(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id, "rate-limit")
        override = await self._store.get_ratelimit_override(user_id)
        if override is None:
            return {}
        return {
            "messages_per_second": override.messages_per_second,
            "burst_count": override.burst_count,
        }

    async def set_ratelimit(self, user_id: str, override: RateLimitOverride) -> dict[str, Any]:
        await self.existing(user_id, "rate-limit")
        await self._store.set_ratelimit_override(user_id, override)
        self._limiters.set_override(user_id, override_limit(override))
        return {
            "messages_per_second": override.messages_per_second,
            "burst_count": override.burst_count,
        }

    async def delete_ratelimit(self, user_id: str) -> None:
        await self.existing(user_id, "rate-limit")
        await self._store.delete_ratelimit_override(user_id)
        self._limiters.set_override(user_id, None)

    # -- devices ----------------------------------------------------------------------

    async def devices(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        await self._last_seen.flush()
        devices = [_device_json(d) for d in await self._accounts.get_devices(user_id)]
        return {"devices": devices, "total": len(devices)}

    async def device(self, user_id: str, device_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        await self._last_seen.flush()
        device = await self._accounts.get_device(user_id, device_id)
        if device is None:
            raise not_found("Device not found")
        return _device_json(device)

    async def create_device(self, user_id: str, device_id: str) -> None:
        await self.existing(user_id)
        await self._accounts.upsert_device(user_id, device_id)

    async def rename_device(self, user_id: str, device_id: str, name: str | None) -> None:
        await self.existing(user_id)
        if await self._accounts.get_device(user_id, device_id) is None:
            raise not_found("Device not found")
        if name is not None:
            await self._accounts.set_device_display_name(user_id, device_id, name)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        await self.existing(user_id)
        await self._sessions.delete_devices(user_id, device_ids)

    # -- rooms, pushers, account data -------------------------------------------------

    async def joined_rooms(self, user_id: str) -> dict[str, Any]:
        rooms = await self._current_state.get_rooms_for_user(user_id, ("join",))
        return {"joined_rooms": rooms, "total": len(rooms)}

    async def memberships(self, user_id: str) -> dict[str, Any]:
        infos = await self._current_state.get_memberships_for_user(user_id)
        return {"memberships": {i.room_id: i.membership for i in infos}}

    async def pushers(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        pushers = [
            {
                "app_display_name": p.app_display_name,
                "app_id": p.app_id,
                "data": p.data,
                "device_display_name": p.device_display_name,
                "kind": p.kind,
                "lang": p.lang,
                "profile_tag": p.profile_tag or "",
                "pushkey": p.pushkey,
            }
            for p in await self._push.get_pushers(user_id)
        ]
        return {"pushers": pushers, "total": len(pushers)}

    async def account_data(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        global_data: dict[str, Any] = {}
        rooms: dict[str, dict[str, Any]] = {}
        for entry in await self._account_data.get_since(user_id, 0):
            if entry.room_id:
                rooms.setdefault(entry.room_id, {})[entry.data_type] = entry.content
            else:
                global_data[entry.data_type] = entry.content
        return {"account_data": {"global": global_data, "rooms": rooms}}


def _details(user: AdminUser, threepids: list[UserThreepid]) -> dict[str, Any]:
    body = user_json(user, seconds=True)
    body.update(
        {
            "threepids": [t.to_json() for t in threepids],
            "external_ids": [],
            "appservice_id": None,
            "consent_server_notice_sent": None,
            "consent_version": None,
            "consent_ts": None,
        }
    )
    return body


MAX_ADMIN_THREEPIDS = 100


def _threepid_list(value: Any) -> tuple[str, ...] | None:
    """PUT's `threepids`: [{medium: email, address}], canonical addresses."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ADMIN_THREEPIDS:
        raise bad_json(f"'threepids' must be a list of at most {MAX_ADMIN_THREEPIDS}")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("address"), str):
            raise MatrixError(400, "M_MISSING_PARAM", "Each threepid needs medium and address")
        if item.get("medium") != "email":
            raise invalid_param("Only email addresses are supported")
        out.append(canonical_email(item["address"]))
    return tuple(dict.fromkeys(out))


def _device_json(device: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": device.device_id,
        "user_id": device.user_id,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": device.last_seen_user_agent,
        "dehydrated": False,
    }
    if device.display_name is not None:
        body["display_name"] = device.display_name
    return body


def parse_user_changes(body: dict[str, Any], extra_types: tuple[str, ...] = ()) -> UserChanges:
    """Check PUT /v2/users/<id>'s body (admin tools send whole records: unknown keys
    are ignored; third-party IDs and SSO links are not supported here)."""

    def opt_str(key: str, max_len: int) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > max_len:
            raise bad_json(f"'{key}' must be a string of at most {max_len} characters")
        return value

    def opt_bool(key: str) -> bool | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise bad_json(f"'{key}' must be a boolean")
        return value

    external_ids = body.get("external_ids")
    if external_ids is not None:
        if not isinstance(external_ids, list):
            raise bad_json("'external_ids' must be a list")
        if external_ids:
            raise invalid_param("'external_ids' are not supported by this server")
    threepids = _threepid_list(body.get("threepids"))
    password = opt_str("password", 512)
    avatar_url = opt_str("avatar_url", MAX_AVATAR_URL)
    if avatar_url and not avatar_url.startswith("mxc://"):
        raise invalid_param("'avatar_url' must be an mxc:// URI")
    set_user_type = "user_type" in body
    user_type = body.get("user_type")
    if set_user_type and user_type not in (*USER_TYPES, *extra_types):
        allowed = ", ".join(repr(t) for t in ("bot", "support", *extra_types))
        raise invalid_param(f"'user_type' must be null or one of {allowed}")
    logout_devices = opt_bool("logout_devices")
    return UserChanges(
        password=password,
        logout_devices=True if logout_devices is None else logout_devices,
        displayname=opt_str("displayname", MAX_DISPLAYNAME),
        avatar_url=avatar_url,
        admin=opt_bool("admin"),
        deactivated=opt_bool("deactivated"),
        threepids=threepids,
        locked=opt_bool("locked"),
        user_type=user_type,
        set_user_type=set_user_type,
    )
