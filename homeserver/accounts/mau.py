"""Monthly active users and resource-limit blocking, as Synapse does them
(homeserver/config/resource_limits.py has the settings).

Counting (`record`, from get_requester on every authenticated request): a user is
counted once active in the last 30 days; guests, support users and users still in
their trial period are not; users of an appservice's namespace are recorded with the
appservice's ID and do not count towards max_mau_value (requests an appservice makes
with its own token are never recorded, as Synapse without track_appservice_user_ips).
A newcomer is only counted while there is room under the limit. The hot path costs a
dict lookup: a user this process counted (or found counted) less than an hour ago is
not looked at again for that hour (Synapse's LAST_SEEN_GRANULARITY, the same trade
of timestamp accuracy for fewer writes); users not counted (trial, guests, refused
while full) are looked at again after a while, not on every request.

Processes: every process records the users it serves straight into the shared table
(as each records its devices' last-seen), so a user counted by one worker is found
counted by the others (one read per user per hour each). Reaping, the reserved seats
and the metrics run on the main process only, as Synapse's background-tasks process.

Blocking (`check`), Synapse's auth blocking: with hs_disabled everyone is refused;
with limit_usage_by_mau, a user not counted and not in trial is refused while the
count is at max_mau_value (registration: unless with a reserved address). The server
notices user, support users and appservices acting with their token are never
refused; server admins are not exempt (as in Synapse).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from homeserver.config.resource_limits import ResourceLimitsConfig
from homeserver.errors import MatrixError
from homeserver.storage.monthly_active_users import MONTH_MS, MauStore

log = logging.getLogger(__name__)

LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
LIMIT_TYPE_MAU = "monthly_active_user"
LIMIT_TYPE_DISABLED = "hs_disabled"
MAU_EXCEEDED_MESSAGE = "Monthly Active User Limit Exceeded"
SUPPORT_USER_TYPE = "support"

GRANULARITY_MS = 3600 * 1000  # a counted user's timestamp is refreshed at most hourly
RETRY_MS = 60 * 1000  # a user refused a seat while full is looked at again after this
COUNT_CACHE_MS = 5 * 1000  # the count behind refusals (another process may change it)
MAX_CACHED_USERS = 200_000
DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def resource_limit_error(message: str, admin_contact: str | None, limit_type: str) -> MatrixError:
    """Synapse's ResourceLimitError: 403 with the admin contact and the limit's kind."""
    return MatrixError(
        403, LIMIT_EXCEEDED, message, admin_contact=admin_contact, limit_type=limit_type
    )


class ResourceLimits:
    def __init__(
        self,
        config: ResourceLimitsConfig,
        store: MauStore,
        *,
        notices_user: str | None = None,
        appservice_of: Callable[[str], str | None] = lambda _user: None,
        runs_background: bool = True,
    ) -> None:
        self.config = config
        self._store = store
        self._notices_user = notices_user
        self._appservice_of = appservice_of
        self.runs_background = runs_background
        self._counted: dict[str, int] = {}  # user -> when counted (ms), as far as we know
        self._next_look: dict[str, int] = {}  # user -> when `record` looks again (ms)
        self._users: dict[str, tuple[int, bool, str | None] | None] = {}
        self._count: tuple[int, int] | None = None  # (count, when read)
        self.reserved_users: list[str] = []
        # The "limit reached" server notices (limit_notices.py), made on first sync.
        self.notices: Any = None
        # What the metrics show (refreshed by the main process's job).
        self.gauge_current = 0
        self.gauge_by_service: dict[str, int] = {}

    # -- counting ----------------------------------------------------------------------

    async def record(self, user_id: str) -> None:
        """The user made a request: count them (at most one write per user per hour)."""
        if not self.config.tracks_mau:
            return
        now = now_ms()
        if now < self._next_look.get(user_id, 0):
            return
        self._trim(self._next_look)
        self._next_look[user_id] = now + await self._record(user_id, now)

    async def _record(self, user_id: str, now: int) -> int:
        """Count the user if they should be; how long until looking at them again."""
        info = await self._user(user_id)
        if info is None or info[1] or info[2] == SUPPORT_USER_TYPE:
            return GRANULARITY_MS  # no such local account, a guest, a support user
        trial_left = self._trial_left(user_id, info[0], now)
        if trial_left > 0:
            return min(trial_left, GRANULARITY_MS)
        last = await self.last_active(user_id)
        if last is not None and now - last < GRANULARITY_MS:
            return last + GRANULARITY_MS - now  # counted by us or another process
        service = self._appservice_of(user_id)
        if last is None and self.config.limit_usage_by_mau:
            limit = self.config.max_mau_value
            if not await self._store.insert_if_room(user_id, now, limit, service):
                return RETRY_MS  # full: refused a seat
        else:
            await self._store.upsert(user_id, now, service)
        self._counted_now(user_id, now)
        return GRANULARITY_MS

    def _counted_now(self, user_id: str, now: int) -> None:
        self._trim(self._counted)
        self._counted[user_id] = now
        self._count = None

    async def add_reserved(self, user_id: str) -> None:
        """A user registered with a reserved address holds a seat at once (before
        their first login, which would otherwise be refused while full)."""
        if self.config.tracks_mau:
            await self._store.upsert(user_id, now_ms(), self._appservice_of(user_id))
            self._counted_now(user_id, now_ms())

    async def last_active(self, user_id: str) -> int | None:
        """When the user was last counted, if within the month (ours first, then the
        table: another process may have counted them)."""
        now = now_ms()
        known = self._counted.get(user_id)
        if known is not None and now - known < MONTH_MS:
            return known
        last = await self._store.last_active(user_id)
        if last is not None and now - last < MONTH_MS:
            self._trim(self._counted)
            self._counted[user_id] = last
            return last
        return None

    async def count(self, *, fresh: bool = False) -> int:
        """Users counted towards max_mau_value (read again after a few seconds; with
        `fresh`, now, unless the cached count already says full)."""
        now = now_ms()
        cached = self._count
        if cached is not None and now - cached[1] < COUNT_CACHE_MS:
            full = cached[0] >= self.config.max_mau_value
            if full or not fresh:
                return cached[0]
        value = await self._store.count()
        self._count = (value, now)
        return value

    async def _user(self, user_id: str) -> tuple[int, bool, str | None] | None:
        if user_id not in self._users:
            self._trim(self._users)
            self._users[user_id] = await self._store.user_info(user_id)
        return self._users[user_id]

    def _trial_left(self, user_id: str, created_ts: int, now: int) -> int:
        days = self.config.trial_days(self._appservice_of(user_id))
        return created_ts + days * DAY_MS - now if days else 0

    async def in_trial(self, user_id: str) -> bool:
        info = await self._user(user_id)
        return info is not None and self._trial_left(user_id, info[0], now_ms()) > 0

    @staticmethod
    def _trim(cache: dict[str, Any]) -> None:
        if len(cache) >= MAX_CACHED_USERS:
            cache.clear()  # rare; everything is read again on demand

    # -- blocking ----------------------------------------------------------------------

    async def check(
        self,
        user_id: str | None = None,
        *,
        threepid: tuple[str, str] | None = None,
        appservice: bool = False,
    ) -> None:
        """Refuse (403 M_RESOURCE_LIMIT_EXCEEDED) what the limits forbid: for a user
        (their requests, their login), for a registration (with its address, if any),
        or with neither, for "someone new" (what the server notice reports)."""
        if not self.config.may_block or appservice:
            return
        if user_id is not None:
            if user_id == self._notices_user:
                return
            info = await self._user(user_id)
            if info is not None and info[2] == SUPPORT_USER_TYPE:
                return
        if self.config.hs_disabled:
            raise resource_limit_error(
                self.config.hs_disabled_message, self.config.admin_contact, LIMIT_TYPE_DISABLED
            )
        if not self.config.limit_usage_by_mau:
            return
        fresh = False
        if user_id is not None:
            if await self.last_active(user_id) is not None or await self.in_trial(user_id):
                return
            # Not counted: their seat was refused (`record` ran first), so a count with
            # room in it is stale (another process took the last seats a moment ago).
            fresh = True
        elif threepid is not None and threepid in self.config.reserved_threepids:
            return
        if await self.count(fresh=fresh) >= self.config.max_mau_value:
            raise resource_limit_error(
                MAU_EXCEEDED_MESSAGE, self.config.admin_contact, LIMIT_TYPE_MAU
            )

    async def blocked_reason(self) -> tuple[str, str] | None:
        """(message, limit_type) while newcomers are refused, else None."""
        try:
            await self.check()
        except MatrixError as exc:
            return exc.message, str(exc.extra.get("limit_type"))
        return None

    # -- the main process's jobs -------------------------------------------------------

    async def start(self) -> None:
        """At startup (main process): the reserved seats, then a first reaping."""
        if not self.config.tracks_mau:
            return
        owners = await self._store.owners_of(self.config.reserved_threepids)
        for user_id in owners:
            info = await self._user(user_id)
            if info is not None and info[2] != SUPPORT_USER_TYPE:
                await self._store.upsert(user_id, now_ms(), self._appservice_of(user_id))
        missing = len(self.config.reserved_threepids) - len(owners)
        if missing:
            log.info("%d reserved MAU address(es) belong to no account yet", missing)
        await self.reap()

    async def reap(self) -> None:
        """Hourly: forget users inactive for 30 days; beyond max_mau_value (lowered
        since), the least recently active. Reserved seats stay."""
        if not self.config.tracks_mau:
            return
        limit = self.config.max_mau_value if self.config.limit_usage_by_mau else None
        reserved_threepids = self.config.reserved_threepids
        if limit is not None:
            reserved_threepids = reserved_threepids[:limit]
        self.reserved_users = await self._store.owners_of(reserved_threepids)
        removed = await self._store.reap(now_ms(), self.reserved_users, limit)
        if removed:
            log.info("forgot %d monthly active user(s)", removed)
            self._counted.clear()
            self._next_look.clear()
            self._count = None
        await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        """Every few minutes: what synapse_admin_mau_* show."""
        if not self.config.tracks_mau:
            return
        self.gauge_current = await self._store.count()
        self.gauge_by_service = await self._store.count_by_service()


# Where the handlers find it (set only when a limit or the counting is configured).
RESOURCE_LIMITS: web.AppKey[ResourceLimits] = web.AppKey("resource_limits", ResourceLimits)
