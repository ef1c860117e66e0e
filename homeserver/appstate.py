"""Typed application state: the services a handler may read, and `Mounts`.

The composition module (homeserver/composition.py) builds every service and sets these
keys once the app starts; route modules read the ones they serve with
`request.config_dict[KEY]`. A key exists only for something a handler (or a test, as an
observer) reads: services receive each other as constructor arguments, never through
app state.

A leaf module: service types are imported for type checking only, so any handler can
import it without pulling in (or cycling through) the services themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.config import Config, ListenerConfig

if TYPE_CHECKING:
    from homeserver.accounts.admin_register import SharedSecretRegistration
    from homeserver.accounts.auto_join import AutoJoin
    from homeserver.accounts.identity_binds import IdentityBinds
    from homeserver.accounts.jwt_login import JwtLogin
    from homeserver.accounts.lifecycle import AccountLifecycle
    from homeserver.accounts.openid import OpenIdTokens
    from homeserver.accounts.registration import RegistrationService
    from homeserver.accounts.sessions import LastSeenTracker, SessionService
    from homeserver.accounts.sso import SsoService
    from homeserver.accounts.threepids import ThreepidService
    from homeserver.accounts.uia import UserInteractiveAuth
    from homeserver.admin.build import AdminServices
    from homeserver.admin.federation import AdminDestinations
    from homeserver.admin.jobs import JobRunner
    from homeserver.admin.notices import ServerNotices
    from homeserver.admin.reports import AdminReports
    from homeserver.admin.room_stats import RoomStatsUpdater
    from homeserver.admin.rooms import AdminRooms
    from homeserver.admin.shutdown import RoomShutdown
    from homeserver.admin.tokens import AdminTokens
    from homeserver.admin.users import AdminUsers
    from homeserver.appservice.registry import AppServices
    from homeserver.appservice.sender import AppServiceSender
    from homeserver.delayed.service import DelayedEvents
    from homeserver.e2ee.build import E2ee
    from homeserver.e2ee.dehydration import DehydratedDevices
    from homeserver.e2ee.device_lists import DeviceListService
    from homeserver.e2ee.key_backup import KeyBackupService
    from homeserver.e2ee.keys import KeysService
    from homeserver.e2ee.to_device import ToDeviceService
    from homeserver.ephemeral.account_data import AccountDataService
    from homeserver.ephemeral.presence import PresenceService
    from homeserver.ephemeral.receipts import ReceiptsService
    from homeserver.ephemeral.typing import TypingService
    from homeserver.media.admin import MediaAdmin
    from homeserver.media.preview import UrlPreviewer
    from homeserver.media.repository import MediaRepository
    from homeserver.moderation import Moderation
    from homeserver.profiles.directory import UserDirectory
    from homeserver.profiles.service import ProfileService
    from homeserver.push.actions import ActionGenerator
    from homeserver.push.rules_service import PushRulesService
    from homeserver.ratelimit import RateLimiters
    from homeserver.relations.service import RelationsService
    from homeserver.reports.service import ReportService
    from homeserver.rooms.creation import RoomCreator
    from homeserver.rooms.directory import RoomDirectory
    from homeserver.rooms.hierarchy import SpaceHierarchy
    from homeserver.rooms.local_events import LocalEvents
    from homeserver.rooms.membership import MembershipService
    from homeserver.rooms.reader import RoomReader
    from homeserver.rooms.sending import RoomSender
    from homeserver.rooms.third_party_invites import ThirdPartyInvites
    from homeserver.rooms.upgrade import RoomUpgrader
    from homeserver.search.service import SearchService
    from homeserver.sliding_sync.service import SlidingSyncService
    from homeserver.storage import Stores
    from homeserver.storage.account_auth import AccountAuthStore
    from homeserver.storage.e2ee_keys import E2eeKeyStore
    from homeserver.storage.push import PushStore
    from homeserver.storage.room_directory import RoomReadStore
    from homeserver.sync.joined_rooms import JoinedRoomsCache
    from homeserver.sync.notifier import Notifier
    from homeserver.sync.service import SyncService

# -- shared -------------------------------------------------------------------------------
CONFIG = web.AppKey("config", Config)
# Whether create_app was given areas or overrides beyond production's (a test's
# substitutes: a fake port, an extra route), which only this process has.
SUBSTITUTED = web.AppKey("substituted", bool)
# Bound local port -> the listener serving it, filled in by the CLI once sockets are
# bound. Unset in tests (aiohttp_client), where every resource is served.
LISTENERS: web.AppKey[dict[int, ListenerConfig]] = web.AppKey("listeners")
STORES: web.AppKey[Stores] = web.AppKey("stores")
RATE_LIMITERS: web.AppKey[RateLimiters] = web.AppKey("rate_limiters")
NOTIFIER: web.AppKey[Notifier] = web.AppKey("notifier")

# -- rooms --------------------------------------------------------------------------------
LOCAL_EVENTS: web.AppKey[LocalEvents] = web.AppKey("local_events")
MEMBERSHIP: web.AppKey[MembershipService] = web.AppKey("membership")
ROOM_CREATOR: web.AppKey[RoomCreator] = web.AppKey("room_creator")
ROOM_READ_STORE: web.AppKey[RoomReadStore] = web.AppKey("room_read_store")
ROOM_READER: web.AppKey[RoomReader] = web.AppKey("room_reader")
ROOM_SENDER: web.AppKey[RoomSender] = web.AppKey("room_sender")
ROOM_DIRECTORY: web.AppKey[RoomDirectory] = web.AppKey("room_directory")
SPACE_HIERARCHY: web.AppKey[SpaceHierarchy] = web.AppKey("space_hierarchy")
ROOM_UPGRADER: web.AppKey[RoomUpgrader] = web.AppKey("room_upgrader")
RELATIONS: web.AppKey[RelationsService] = web.AppKey("relations")

# -- sync and ephemeral streams -------------------------------------------------------------
SYNC: web.AppKey[SyncService] = web.AppKey("sync")
JOINED_ROOMS: web.AppKey[JoinedRoomsCache] = web.AppKey("joined_rooms")
ACCOUNT_DATA: web.AppKey[AccountDataService] = web.AppKey("account_data")
RECEIPTS: web.AppKey[ReceiptsService] = web.AppKey("receipts")
PRESENCE: web.AppKey[PresenceService] = web.AppKey("presence")
TYPING: web.AppKey[TypingService] = web.AppKey("typing")

# -- accounts -------------------------------------------------------------------------------
ACCOUNT_AUTH_STORE: web.AppKey[AccountAuthStore] = web.AppKey("account_auth_store")
UIA: web.AppKey[UserInteractiveAuth] = web.AppKey("uia")
SESSIONS: web.AppKey[SessionService] = web.AppKey("sessions")
# org.matrix.login.jwt (jwt_config); None when not configured.
JWT_LOGIN: web.AppKey[JwtLogin | None] = web.AppKey("jwt_login")
LAST_SEEN: web.AppKey[LastSeenTracker] = web.AppKey("last_seen")
REGISTRATION: web.AppKey[RegistrationService] = web.AppKey("registration")
ACCOUNT_LIFECYCLE: web.AppKey[AccountLifecycle] = web.AppKey("account_lifecycle")
IDENTITY_BINDS: web.AppKey[IdentityBinds] = web.AppKey("identity_binds")
THREEPIDS: web.AppKey[ThreepidService] = web.AppKey("threepids")
SSO_SERVICE: web.AppKey[SsoService] = web.AppKey("sso")
AUTO_JOIN: web.AppKey[AutoJoin] = web.AppKey("auto_join")
THIRD_PARTY_INVITES: web.AppKey[ThirdPartyInvites] = web.AppKey("third_party_invites")
SHARED_SECRET_REGISTRATION: web.AppKey[SharedSecretRegistration] = web.AppKey(
    "shared_secret_registration"
)
OPENID_TOKENS: web.AppKey[OpenIdTokens] = web.AppKey("openid_tokens")

# -- end-to-end encryption ----------------------------------------------------------------
E2EE_KEYS: web.AppKey[KeysService] = web.AppKey("e2ee_keys")
# The one key store of the app (it caches per-device counts; federation shares it).
E2EE_KEY_STORE: web.AppKey[E2eeKeyStore] = web.AppKey("e2ee_key_store")
TO_DEVICE: web.AppKey[ToDeviceService] = web.AppKey("e2ee_to_device")
DEVICE_LISTS: web.AppKey[DeviceListService] = web.AppKey("e2ee_device_lists")
KEY_BACKUP: web.AppKey[KeyBackupService] = web.AppKey("e2ee_key_backup")

# -- push, profiles, reports --------------------------------------------------------------
PUSH_STORE: web.AppKey[PushStore] = web.AppKey("push_store")
PUSH_RULES: web.AppKey[PushRulesService] = web.AppKey("push_rules")
PUSH_ACTIONS: web.AppKey[ActionGenerator] = web.AppKey("push_actions")
PROFILES: web.AppKey[ProfileService] = web.AppKey("profiles")
USER_DIRECTORY: web.AppKey[UserDirectory] = web.AppKey("user_directory")
REPORTS: web.AppKey[ReportService] = web.AppKey("reports")

# -- server administration (/_synapse/admin) ------------------------------------------------
# What admins decided about users and rooms (read on every authenticated request).
MODERATION: web.AppKey[Moderation] = web.AppKey("moderation")
ADMIN_USERS: web.AppKey[AdminUsers] = web.AppKey("admin_users")
ADMIN_ROOMS: web.AppKey[AdminRooms] = web.AppKey("admin_rooms")
ROOM_SHUTDOWN: web.AppKey[RoomShutdown] = web.AppKey("admin_room_shutdown")
ADMIN_REPORTS: web.AppKey[AdminReports] = web.AppKey("admin_reports")
ADMIN_TOKENS: web.AppKey[AdminTokens] = web.AppKey("admin_tokens")
ADMIN_DESTINATIONS: web.AppKey[AdminDestinations] = web.AppKey("admin_destinations")
SERVER_NOTICES: web.AppKey[ServerNotices] = web.AppKey("server_notices")
# Read by tests (and the admin benchmark): the job runner and the room statistics.
ADMIN_JOBS: web.AppKey[JobRunner] = web.AppKey("admin_jobs")
ROOM_STATS: web.AppKey[RoomStatsUpdater] = web.AppKey("admin_room_stats")
MEDIA: web.AppKey[MediaRepository] = web.AppKey("media_repository")
MEDIA_ADMIN: web.AppKey[MediaAdmin] = web.AppKey("media_admin")
SEARCH: web.AppKey[SearchService] = web.AppKey("search")
DELAYED_EVENTS: web.AppKey[DelayedEvents] = web.AppKey("delayed_events")
DEHYDRATED_DEVICES: web.AppKey[DehydratedDevices] = web.AppKey("dehydrated_devices")
APP_SERVICES: web.AppKey[AppServices] = web.AppKey("app_services")
APP_SERVICE_SENDER: web.AppKey[AppServiceSender] = web.AppKey("app_service_sender")
SLIDING_SYNC: web.AppKey[SlidingSyncService] = web.AppKey("sliding_sync")
# None when url_preview_enabled is off.
URL_PREVIEWER: web.AppKey[UrlPreviewer | None] = web.AppKey("url_previewer")
# None in a single-process deployment (homeserver.replication.build.Replication).
REPLICATION: web.AppKey[Any] = web.AppKey("replication")


@dataclass(frozen=True)
class Mounts:
    """Where an area attaches its routes; built once by create_app.

    - `root`: the top-level app (middlewares; no lifetimes: the composition module owns
      them all).
    - `client`: /_matrix/client; `admin`: /_synapse/admin (the client resource serves it).
    - `federation`: /_matrix/federation; `key`: /_matrix/key.
    - `media`: /_matrix/media (legacy, unauthenticated media API).
    - `well_known`: /.well-known/matrix.
    """

    config: Config
    root: web.Application
    client: web.Application
    admin: web.Application
    federation: web.Application
    key: web.Application
    media: web.Application
    well_known: web.Application


def admin_services(admin: AdminServices) -> dict[web.AppKey[Any], Any]:
    """Where the admin API's handlers find each of its services."""
    return {
        ADMIN_USERS: admin.users,
        ADMIN_ROOMS: admin.rooms,
        ROOM_SHUTDOWN: admin.shutdown,
        ADMIN_JOBS: admin.jobs,
        ADMIN_REPORTS: admin.reports,
        ADMIN_TOKENS: admin.tokens,
        ADMIN_DESTINATIONS: admin.destinations,
        SERVER_NOTICES: admin.notices,
    }


def e2ee_services(e2ee: E2ee) -> dict[web.AppKey[Any], Any]:
    """Where the end-to-end encryption handlers find each of its services."""
    return {
        E2EE_KEYS: e2ee.keys,
        E2EE_KEY_STORE: e2ee.key_store,
        TO_DEVICE: e2ee.to_device,
        DEVICE_LISTS: e2ee.device_lists,
        KEY_BACKUP: e2ee.key_backup,
        DEHYDRATED_DEVICES: e2ee.dehydrated,
    }
