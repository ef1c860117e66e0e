"""AppKeys of the accounts area (set by homeserver.client.account's cleanup_ctx).

DEVICE_DELETED_HOOKS is the extension point for other areas: a list of
`async def hook(user_id: str, device_id: str) -> None` called after a device is deleted
(logout, device deletion, deactivation), e.g. to drop its end-to-end keys. Register with
`mounts.root.setdefault(DEVICE_DELETED_HOOKS, []).append(hook)` in an area's setup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from homeserver.accounts.admin_register import SharedSecretRegistration
from homeserver.accounts.lifecycle import AccountLifecycle
from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.sessions import LastSeenTracker, SessionService
from homeserver.accounts.uia import UserInteractiveAuth
from homeserver.storage.account_auth import AccountAuthStore

DeviceDeletedHook = Callable[[str, str], Awaitable[None]]

DEVICE_DELETED_HOOKS: web.AppKey[list[DeviceDeletedHook]] = web.AppKey("device_deleted_hooks")
# Same shape, run after a login created a new device.
DEVICE_CREATED_HOOKS: web.AppKey[list[DeviceDeletedHook]] = web.AppKey("device_created_hooks")
# Same shape, run after a device was renamed (other servers show device names).
DEVICE_UPDATED_HOOKS: web.AppKey[list[DeviceDeletedHook]] = web.AppKey("device_updated_hooks")
ACCOUNT_AUTH_STORE = web.AppKey("account_auth_store", AccountAuthStore)
PASSWORD_HASHER = web.AppKey("password_hasher", PasswordHasher)
UIA = web.AppKey("uia", UserInteractiveAuth)
SESSIONS = web.AppKey("sessions", SessionService)
REGISTRATION = web.AppKey("registration", RegistrationService)
ACCOUNT_LIFECYCLE = web.AppKey("account_lifecycle", AccountLifecycle)
SHARED_SECRET_REGISTRATION = web.AppKey("shared_secret_registration", SharedSecretRegistration)
LAST_SEEN = web.AppKey("last_seen", LastSeenTracker)
