"""The accounts part of the wiring: sessions, user-interactive auth and its stages,
registration, the identity area (addresses, mail), the account lifecycle.

Split from composition.py (which must stay readable): built once, after the services
it hooks into (E2EE devices, pushers, account data, membership), and handed back as
one object whose `app_keys` the handlers find.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web

import homeserver.appstate as keys
from homeserver.accounts.admin_register import SharedSecretRegistration
from homeserver.accounts.auto_join import AutoJoin
from homeserver.accounts.housekeeping import housekeeping
from homeserver.accounts.jwt_login import JwtLogin
from homeserver.accounts.lifecycle import AccountLifecycle
from homeserver.accounts.mau import RESOURCE_LIMITS, ResourceLimits
from homeserver.accounts.openid import OpenIdTokens
from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.registration_stages import install_registration_stages
from homeserver.accounts.sessions import LastSeenTracker, SessionService
from homeserver.accounts.sso import SsoService
from homeserver.accounts.stale_devices import RUN_INTERVAL_S as STALE_DEVICES_INTERVAL_S
from homeserver.accounts.stale_devices import StaleDevices
from homeserver.accounts.uia import UserInteractiveAuth
from homeserver.background import BackgroundTasks, every
from homeserver.composition_identity import Identity, build_identity
from homeserver.composition_limits import build_resource_limits
from homeserver.config import Config
from homeserver.e2ee.build import E2ee
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.metrics import Metrics
from homeserver.moderation import Moderation
from homeserver.ratelimit import RateLimiters
from homeserver.rooms.creation import RoomCreator
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.third_party_invites import InviteExchange
from homeserver.storage import Stores
from homeserver.storage.account_auth import AccountAuthStore
from homeserver.storage.database import Database
from homeserver.storage.push import PushStore
from homeserver.storage.sso import SsoStore
from homeserver.storage.threepids import ThreepidStore
from homeserver.storage.user_consent import ConsentStore


@dataclass(frozen=True)
class Accounts:
    auth_store: AccountAuthStore
    hasher: PasswordHasher
    sessions: SessionService
    uia: UserInteractiveAuth
    registration: RegistrationService
    identity: Identity
    lifecycle: AccountLifecycle
    last_seen: LastSeenTracker
    sso: SsoService
    auto_join: AutoJoin
    resource_limits: ResourceLimits | None = None

    def app_keys(self, config: Config) -> dict[web.AppKey[Any], Any]:
        """Where the accounts area's handlers find its services."""
        limits: dict[web.AppKey[Any], Any] = {}
        if self.resource_limits is not None:
            limits[RESOURCE_LIMITS] = self.resource_limits
        return limits | {
            keys.IDENTITY_BINDS: self.identity.binds,
            keys.THIRD_PARTY_INVITES: self.identity.invites,
            keys.THREEPIDS: self.identity.threepids,
            keys.SSO_SERVICE: self.sso,
            keys.AUTO_JOIN: self.auto_join,
            keys.ACCOUNT_AUTH_STORE: self.auth_store,
            keys.UIA: self.uia,
            keys.SESSIONS: self.sessions,
            keys.JWT_LOGIN: (
                JwtLogin(config.jwt_login, self.sessions.accounts, self.registration, self.sessions)
                if config.jwt_login is not None
                else None
            ),
            keys.LAST_SEEN: self.last_seen,
            keys.REGISTRATION: self.registration,
            keys.ACCOUNT_LIFECYCLE: self.lifecycle,
            keys.SHARED_SECRET_REGISTRATION: SharedSecretRegistration(
                config.registration.shared_secret
            ),
            keys.OPENID_TOKENS: OpenIdTokens(),
        }


async def build_accounts(
    config: Config,
    database: Database,
    stores: Stores,
    stack: AsyncExitStack,
    tasks: BackgroundTasks,
    *,
    e2ee: E2ee,
    push_store: PushStore,
    account_data: AccountDataService,
    limiters: RateLimiters,
    moderation: Moderation,
    membership: MembershipService,
    local_events: LocalEvents,
    room_creator: RoomCreator,
    signing_key: Any,
    exchange: InviteExchange | None,
    metrics: Metrics | None = None,
) -> Accounts:
    server_name = config.server_name
    auth_store = AccountAuthStore(database)
    hasher = PasswordHasher(config.password_hashing)
    sessions = SessionService(
        stores.accounts,
        auth_store,
        hasher,
        limiters,
        server_name,
        device_deleted=[e2ee.device_deleted, push_store.delete_device_pushers],
        device_created=[e2ee.keys.device_created],
        device_renamed=[e2ee.keys.device_created],  # other servers show it: as a new one
        moderation=moderation,
        lifetimes=config.token_lifetimes,
    )
    e2ee.dehydrated.bind(sessions.delete_devices)
    uia = UserInteractiveAuth(auth_store, stores.accounts, hasher, server_name)
    install_registration_stages(uia, config, stack)
    if not config.passwords.enabled:
        uia.disable_passwords()
    uia.skip_within(config.ui_auth_session_timeout_ms)
    auto_join = AutoJoin(
        config.auto_join,
        server_name,
        config.default_room_version,
        stores,
        membership,
        room_creator,
    )
    sso_store = SsoStore(database)
    sso = SsoService(
        config, sso_store, stores.accounts, ThreepidStore(database), auth_store, auto_join
    )
    stack.push_async_callback(sso.close)
    if sso.enabled:
        uia.offer_sso(sso_store.has_identity)
    registration = RegistrationService(
        config.registration,
        server_name,
        stores.accounts,
        auth_store,
        hasher,
        sessions,
        ConsentStore(database),
    )
    identity = build_identity(
        config, database, stores, membership, local_events, signing_key, exchange, stack
    )
    identity.start(uia, push_store, tasks)
    lifecycle = AccountLifecycle(
        stores.accounts,
        stores.current_state,
        membership,
        hasher,
        sessions,
        push_store.delete_pushers_of,
        identity.forget_user,
        account_data.forget_user,
    )
    if not config.workers.is_worker:
        tasks.spawn(housekeeping(uia, auth_store, identity.threepids), "accounts housekeeping")
        if config.delete_stale_devices_after_ms is not None:
            stale = StaleDevices(
                database, config.delete_stale_devices_after_ms, sessions.delete_devices
            )
            tasks.spawn(every(STALE_DEVICES_INTERVAL_S, stale.run), "stale devices")
    last_seen = LastSeenTracker(stores.accounts)
    last_seen.start()  # writes behind, batched; the rest is written at shutdown
    stack.push_async_callback(last_seen.close)
    return Accounts(
        auth_store,
        hasher,
        sessions,
        uia,
        registration,
        identity,
        lifecycle,
        last_seen,
        sso,
        auto_join,
        await build_resource_limits(config, database, tasks, sessions, metrics),
    )
