"""Builds the admin area's services: the one step of homeserver/composition.py that
wires server administration.

What the rest of the server must know of admin decisions is built earlier by the
composition module, because other services take it as a constructor argument:
`Moderation` (membership, sending, sessions, profiles, typing and federated invites
consult it), the admin stores it reads, and `RoomStatsUpdater` (a listener of the room
service's persister). Everything here comes after all the services it uses; the job
runner's lifetime is registered on the composition module's exit stack right here.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from homeserver.accounts.lifecycle import AccountLifecycle
from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.sessions import LastSeenTracker, SessionService
from homeserver.config import Config
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.moderation import Moderation
from homeserver.profiles.service import ProfileService
from homeserver.ratelimit import RateLimiters
from homeserver.rooms.creation import RoomCreator
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.purge import RoomPurger
from homeserver.rooms.reader import RoomReader
from homeserver.storage import Database, Stores
from homeserver.storage.account_auth import AccountAuthStore
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.admin_jobs import AdminJobStore
from homeserver.storage.admin_rooms import AdminRoomStore
from homeserver.storage.admin_users import AdminUserStore
from homeserver.storage.destinations import DestinationStore
from homeserver.storage.push import PushStore
from homeserver.storage.reports import AdminReportStore
from homeserver.storage.room_directory import RoomReadStore
from homeserver.storage.sso import SsoStore
from homeserver.storage.threepids import ThreepidStore
from homeserver.storage.user_consent import ConsentStore

from .federation import AdminDestinations
from .jobs import JobRunner
from .notices import ServerNotices
from .ports import OutboundFederation
from .reports import AdminReports
from .room_stats import RoomStatsUpdater
from .rooms import AdminRooms
from .shutdown import RoomShutdown
from .tokens import AdminTokens
from .users import AdminUsers


@dataclass(frozen=True)
class AdminServices:
    """What the admin API's handlers call."""

    users: AdminUsers
    rooms: AdminRooms
    shutdown: RoomShutdown
    jobs: JobRunner
    reports: AdminReports
    tokens: AdminTokens
    destinations: AdminDestinations
    notices: ServerNotices


async def build_admin(
    config: Config,
    database: Database,
    stores: Stores,
    stack: AsyncExitStack,
    *,
    user_store: AdminUserStore,
    room_store: AdminRoomStore,
    moderation: Moderation,
    room_stats: RoomStatsUpdater,
    limiters: RateLimiters,
    auth_store: AccountAuthStore,
    hasher: PasswordHasher,
    sessions: SessionService,
    lifecycle: AccountLifecycle,
    last_seen: LastSeenTracker,
    profiles: ProfileService,
    push_store: PushStore,
    account_data_store: AccountDataStore,
    account_data: AccountDataService,
    reader: RoomReader,
    read_store: RoomReadStore,
    directory: RoomDirectory,
    membership: MembershipService,
    local_events: LocalEvents,
    creator: RoomCreator,
    purger: RoomPurger,
    outbound: OutboundFederation | None,
) -> AdminServices:
    """Build the admin services; starts the job runner (stopped through `stack`)."""
    server_name = config.server_name
    jobs = JobRunner(AdminJobStore(database))
    if not config.workers.is_worker:  # the main runs the jobs
        await jobs.start()  # marks jobs a restart interrupted as failed
    stack.push_async_callback(jobs.stop)
    return AdminServices(
        users=AdminUsers(
            server_name,
            user_store,
            stores.accounts,
            stores.current_state,
            moderation,
            limiters,
            lifecycle,
            sessions,
            hasher,
            profiles,
            push_store,
            account_data_store,
            last_seen,
            ThreepidStore(database),
            ConsentStore(database),
            SsoStore(database),
        ),
        rooms=AdminRooms(
            server_name,
            room_store,
            room_stats,
            stores,
            reader,
            directory,
            membership,
            local_events,
            moderation,
            purger,
        ),
        shutdown=RoomShutdown(
            server_name,
            jobs,
            stores,
            room_store,
            purger,
            read_store,
            membership,
            creator,
            local_events,
            stores.accounts,
            config.default_room_version,
        ),
        jobs=jobs,
        reports=AdminReports(AdminReportStore(database), stores),
        tokens=AdminTokens(auth_store),
        destinations=AdminDestinations(DestinationStore(database), outbound),
        notices=ServerNotices(
            config.server_notices,
            server_name,
            config.default_room_version,
            stores,
            room_store,
            creator,
            membership,
            local_events,
            account_data,
        ),
    )
