"""Resource limits at the client API (homeserver/accounts/mau.py decides).

The requests Synapse refuses while the server is disabled or the monthly active user
limit is reached (for users not counted): syncing (v2, sliding sync, /events), room
creation, and every room event a user makes (sends, state, redactions, joins,
leaves, invites, kicks, bans, knocks, upgrades). Login and registration are checked
where they happen (homeserver/accounts/sessions.py, homeserver/client/register.py).
A sync also brings the user's "usage limit reached" server notice up to date.

Installed only when a limit is configured: a server without one pays nothing.
"""

from __future__ import annotations

import re

from aiohttp import web

from homeserver.accounts.limit_notices import LimitNotices
from homeserver.accounts.mau import RESOURCE_LIMITS, ResourceLimits
from homeserver.appstate import SERVER_NOTICES, STORES, Mounts
from homeserver.client.auth import get_requester
from homeserver.http import Handler

_VERSION = re.compile(r"^/_matrix/client/[^/]+")
_SYNC = re.compile(r"(?:/org\.matrix\.simplified_msc3575)?/sync")
_GATED = (
    ({"GET"}, re.compile(r"/events")),
    ({"POST"}, re.compile(r"/createRoom")),
    ({"PUT", "POST"}, re.compile(r"/rooms/[^/]+/(?:send|redact|state)/.*")),
    ({"POST"}, re.compile(r"/rooms/[^/]+/(?:join|leave|invite|kick|ban|unban|upgrade)")),
    ({"POST"}, re.compile(r"/(?:join|knock)/[^/]+")),
)


def _route(request: web.Request) -> str | None:
    """The matched route's template below the version prefix (None: no route)."""
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    if resource is None:
        return None
    return _VERSION.sub("", resource.canonical)


@web.middleware
async def resource_limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = _route(request)
    if path is None:
        return await handler(request)
    syncing = request.method in ("GET", "POST") and _SYNC.fullmatch(path) is not None
    if not syncing and not any(
        request.method in methods and pattern.fullmatch(path) for methods, pattern in _GATED
    ):
        return await handler(request)
    requester = await get_requester(request, allow_guest=True)
    limits = request.config_dict[RESOURCE_LIMITS]
    await limits.check(requester.user_id, appservice=requester.app_service_id is not None)
    if syncing and requester.app_service_id is None:
        notices = _limit_notices(request, limits)
        if notices is not None:
            await notices.on_sync(requester.user_id)
    return await handler(request)


def _limit_notices(request: web.Request, limits: ResourceLimits) -> LimitNotices | None:
    """The limit notices, made on first use (the server notices are built after the
    accounts); only on the main process, which sends room events itself (Synapse
    sends them from its main process too)."""
    if limits.notices is None and limits.runs_background:
        server_notices = request.config_dict.get(SERVER_NOTICES)
        if server_notices is not None:
            limits.notices = LimitNotices(limits, server_notices, request.config_dict[STORES])
    return limits.notices if isinstance(limits.notices, LimitNotices) else None


async def check_registration(request: web.Request, threepid: tuple[str, str] | None) -> None:
    """Synapse refuses registrations while disabled or full (a reserved address
    excepted); not those of appservices or the shared-secret admin API."""
    limits = request.config_dict.get(RESOURCE_LIMITS)
    if limits is not None:
        await limits.check(threepid=threepid)


async def registered(request: web.Request, user_id: str, threepid: tuple[str, str] | None) -> None:
    """A user registered with a reserved address takes their seat at once."""
    limits: ResourceLimits | None = request.config_dict.get(RESOURCE_LIMITS)
    if limits is not None and threepid in limits.config.reserved_threepids:
        await limits.add_reserved(user_id)


def setup(mounts: Mounts) -> None:
    if mounts.config.resource_limits.may_block:
        mounts.client.middlewares.append(resource_limits_middleware)
