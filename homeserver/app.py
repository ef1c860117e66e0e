"""The app factory: `create_app(config)` mounts every area's routes on one aiohttp app.

Layout of the app:

- root app: middlewares (request log, metrics when enabled, errors + CORS, listener
  resource filter), /_synapse/metrics when enabled, and ONE lifetime,
  `homeserver.composition.lifetime`, which builds every service at start-up (in
  dependency order, with constructor arguments), publishes what handlers read as typed
  app state, and tears everything down in reverse order at shutdown.
- one sub-app per URL prefix (see `Mounts`); each area's `setup(mounts)` adds routes
  and nothing else: route modules only read the services they serve.

Adding an area's routes is one line in `AREAS`: the resources a listener must serve for
it and its `setup` function. With homeserver/composition.py (and the CLI), this is the
one module of the core allowed to import `federation`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

import federation.server as federation_inbound
import federation.server.keys as federation_keys_api
import homeserver.admin_api as admin_api
import homeserver.client.account as client_accounts
import homeserver.client.appservice as client_appservice
import homeserver.client.capabilities as client_capabilities
import homeserver.client.dehydrated_devices as client_dehydrated_devices
import homeserver.client.delayed_events as client_delayed_events
import homeserver.client.front_page as client_front_page
import homeserver.client.key_backup as client_key_backup
import homeserver.client.keys as client_keys
import homeserver.client.media as client_media
import homeserver.client.misc as client_misc
import homeserver.client.mutual_rooms as client_mutual_rooms
import homeserver.client.notifications as client_notifications
import homeserver.client.openid as client_openid
import homeserver.client.profile as client_profile
import homeserver.client.push_rules as client_push_rules
import homeserver.client.pushers as client_pushers
import homeserver.client.relations as client_relations
import homeserver.client.resource_limits as client_resource_limits
import homeserver.client.rooms as client_rooms
import homeserver.client.search as client_search
import homeserver.client.sliding_sync as client_sliding_sync
import homeserver.client.sync as client_sync
import homeserver.client.to_device as client_to_device
import homeserver.client.user_directory as client_user_directory
import homeserver.client.versions as client_versions
import homeserver.client.well_known as client_well_known
from homeserver.appstate import CONFIG, LISTENERS, NOTIFIER, REPLICATION, SUBSTITUTED, Mounts
from homeserver.composition import Overrides, lifetime
from homeserver.config import Config
from homeserver.config.workers import EDU_STREAMS
from homeserver.errors import unrecognized
from homeserver.http import MAX_BODY_KEY, Handler, error_middleware, listener_for_request
from homeserver.metrics import METRICS_PATH, Metrics, metrics_middleware
from homeserver.replication.federation import EDUS_PATH, EVENTS_PATH
from homeserver.replication.forward import (
    BACKFILL_PATH,
    MEDIA_ADMIN_ROUTES,
    PRESENCE_PATH,
    Forwarder,
    is_replication_request,
    persister_middleware,
    replication_middleware,
    worker_middleware,
)
from homeserver.request_log import request_log_middleware

logger = logging.getLogger(__name__)

Setup = Callable[[Mounts], None]

CLIENT = frozenset({"client"})
MEDIA_REPO = frozenset({"client", "media"})  # what serves media (and its admin API)
KEYS = frozenset({"federation", "keys"})
FEDERATION = frozenset({"federation"})
# Other servers' downloads of our media: the federation listener's, and a media
# worker's (which serves the store), as Synapse's `media` resource.
FEDERATION_MEDIA = frozenset({"federation", "media"})
FEDERATION_MEDIA_PATH = "/_matrix/federation/v1/media"
# The OpenID userinfo exchange is what third parties (integration managers, widgets) call
# with the client's homeserver URL: served wherever Synapse serves it (federation, openid)
# and on client listeners too, since it discloses only the user ID behind a token the
# caller already holds.
OPENID = frozenset({"client", "federation", "openid"})
OPENID_USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"

# (resources: mounted when some listener serves any of them, setup function).
AREAS: tuple[tuple[frozenset[str], Setup], ...] = (
    (CLIENT, client_versions.setup),
    (CLIENT, client_front_page.setup),
    (CLIENT, client_well_known.setup),
    (KEYS, federation_keys_api.setup),
    (FEDERATION | OPENID, federation_inbound.setup),
    (FEDERATION_MEDIA, federation_inbound.setup_media),
    (CLIENT, client_push_rules.setup),
    (CLIENT, client_pushers.setup),
    (CLIENT, client_notifications.setup),
    (CLIENT, client_relations.setup),
    (CLIENT, client_accounts.setup),
    (CLIENT, client_keys.setup),
    (CLIENT, client_to_device.setup),
    (CLIENT, client_key_backup.setup),
    (CLIENT, client_sync.setup),
    (CLIENT, client_resource_limits.setup),
    (CLIENT, client_rooms.setup),
    (CLIENT, client_profile.setup),
    (CLIENT, client_user_directory.setup),
    (CLIENT, client_capabilities.setup),
    (CLIENT, client_misc.setup),
    (CLIENT, client_mutual_rooms.setup),
    (CLIENT, client_delayed_events.setup),
    (CLIENT, client_dehydrated_devices.setup),
    (CLIENT, client_openid.setup),
    (CLIENT, admin_api.setup),
    (MEDIA_REPO, admin_api.setup_media),
    (MEDIA_REPO, client_media.setup),
    (CLIENT, client_search.setup),
    (CLIENT, client_sliding_sync.setup),
    (CLIENT, client_appservice.setup),
)

# URL prefix -> the listener resources that expose it (Synapse's mapping: media is also
# reachable through the client and federation resources).
PREFIX_RESOURCES: tuple[tuple[str, frozenset[str]], ...] = (
    (OPENID_USERINFO_PATH, OPENID),
    (FEDERATION_MEDIA_PATH, FEDERATION_MEDIA),
    # Authenticated media is part of Synapse's `media` resource too (a media worker).
    ("/_matrix/client/v1/media", frozenset({"client", "media"})),
    ("/_matrix/client", CLIENT),
    ("/_synapse/admin", CLIENT),
    ("/_synapse/client", CLIENT),
    (METRICS_PATH, frozenset({"metrics"})),
    ("/.well-known/matrix", CLIENT),
    ("/_matrix/federation", FEDERATION),
    ("/_matrix/key", KEYS),
    ("/_matrix/media", frozenset({"client", "federation", "media"})),
)


def resources_for_path(path: str) -> frozenset[str] | None:
    """Which listener resources may serve `path`; None for paths outside every prefix."""
    if MEDIA_ADMIN_ROUTES.match(path):
        return MEDIA_REPO
    for prefix, resources in PREFIX_RESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return resources
    return None


@web.middleware
async def listener_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve on each listener only the resources it names (404 for the rest)."""
    listeners = request.config_dict.get(LISTENERS)
    if listeners:
        wanted = resources_for_path(request.path)
        listener = listener_for_request(request)
        if listener is not None and "replication" in listener.resources:
            pass  # another process of this server: it may ask for any resource
        elif wanted is not None and (listener is None or not wanted & listener.resources):
            raise unrecognized("Unrecognized request")
    return await handler(request)


def replication_middlewares(config: Config) -> list[Middleware]:
    """A worker forwards what it does not serve; the main authenticates its
    replication listener (homeserver.replication.forward)."""
    workers = config.workers

    def forwarder(app: web.Application) -> Forwarder | None:
        replication = app.get(REPLICATION)
        return replication.forwarder if replication is not None else None

    def written(app: web.Application) -> int:
        replication = app.get(REPLICATION)
        return replication.written() if replication is not None else 0

    secret = workers.replication_secret
    if workers.is_event_persister and secret:
        # It serves what is routed to its replication listener: room writes.
        return [replication_middleware(secret, lambda app: app.get(NOTIFIER), written)]
    if workers.is_worker:
        # A worker with a `media` listener is a media repository: it serves media
        # itself (uploads included: they write no stream), like Synapse's.
        serves_media = "media" in config.resources
        middlewares: list[Middleware] = []
        if secret and "replication" in config.resources:
            # A stream writer's replication listener: other processes hand it what
            # it writes (other servers' EDUs), authenticated by the secret.
            middlewares.append(replication_middleware(secret, lambda app: app.get(NOTIFIER)))
        middlewares.append(
            worker_middleware(
                lambda app: app[REPLICATION].forwarder,
                serves_media,
                workers.room_writer_url,
                receives_transactions="federation" in config.resources,
                writes_here=workers.reader_streams,
                replication_listener=bool(middlewares),
            )
        )
        return middlewares
    if workers.replicated and secret:
        middlewares = [replication_middleware(secret, lambda app: app.get(NOTIFIER), written)]
        if workers.event_persisters:
            middlewares.append(persister_middleware(forwarder, workers.room_writer_url))
        return middlewares
    return []


async def run_backfill(request: web.Request) -> web.StreamResponse:
    if not is_replication_request(request):
        raise unrecognized("Unrecognized request")
    return await request.app[REPLICATION].run_backfill(request)


async def report_presence(request: web.Request) -> web.StreamResponse:
    if not is_replication_request(request):
        raise unrecognized("Unrecognized request")
    return await request.app[REPLICATION].report_presence(request)


def _federation_writer(request: web.Request) -> Any:
    """This process's FederationWriter, for a request from another process only."""
    writer = request.app[REPLICATION].federation if is_replication_request(request) else None
    if writer is None:
        raise unrecognized("Unrecognized request")
    return writer


async def write_federation_events(request: web.Request) -> web.StreamResponse:
    """A room's PDUs a federation inbound worker checked, for this process to write."""
    return await _federation_writer(request).serve_events(request)


async def receive_federation_edus(request: web.Request) -> web.StreamResponse:
    """A transaction's EDUs, handed to a writer of their stream by a federation
    inbound worker."""
    return await _federation_writer(request).serve_edus(request)


def create_app(
    config: Config,
    *,
    areas: Sequence[tuple[frozenset[str], Setup]] = AREAS,
    overrides: Overrides = Overrides(),
) -> web.Application:
    """Build the whole server as one aiohttp Application (not started).

    Serve it with aiohttp's runner (the CLI binds one site per listener) or with the
    `aiohttp_client` test fixture. Areas whose resources no listener serves are skipped.
    `overrides` lets a test substitute a port or a tuning (see composition.Overrides).
    """
    metrics = Metrics(config.server_name) if config.enable_metrics else None
    # Outermost first: the request log and the metrics see the final status of every
    # request, errors included (error_middleware renders them).
    middlewares: list[Middleware] = [request_log_middleware]
    if metrics is not None:
        middlewares.append(metrics_middleware(metrics))
    middlewares += [error_middleware, listener_middleware]
    middlewares += replication_middlewares(config)
    root = web.Application(
        middlewares=middlewares,
        client_max_size=max(config.max_request_body, config.media.max_upload_size),
    )
    root[CONFIG] = config
    root[SUBSTITUTED] = areas is not AREAS or overrides != Overrides()
    root[MAX_BODY_KEY] = config.max_request_body
    root[LISTENERS] = {}
    if metrics is not None:
        root.router.add_get(METRICS_PATH, metrics.serve)
    root.cleanup_ctx.append(lifetime(overrides, metrics))
    if config.workers.replicated and config.workers.writes("presence"):
        root.router.add_post(PRESENCE_PATH, report_presence)  # the presence writer
    if config.workers.replicated and not config.workers.is_worker:
        root.router.add_post(EDUS_PATH, receive_federation_edus)  # the main: any stream
    elif config.workers.reader_streams & EDU_STREAMS:
        root.router.add_post(EDUS_PATH, receive_federation_edus)  # a stream's writer
    if config.workers.replicated and (
        not config.workers.is_worker or config.workers.is_event_persister
    ):
        # A room's writer: the PDUs an inbound worker checked, backfill for a reader.
        root.router.add_post(EVENTS_PATH, write_federation_events)
        root.router.add_post(BACKFILL_PATH, run_backfill)

    mounts = Mounts(
        config=config,
        root=root,
        client=web.Application(),
        admin=web.Application(),
        federation=web.Application(),
        key=web.Application(),
        media=web.Application(),
        well_known=web.Application(),
    )
    served = config.resources
    if config.workers.is_event_persister:
        # The room writes routed to its replication listener (clients' and servers').
        served |= {"client", "federation"}
    for resources, setup in areas:
        if resources & served:
            setup(mounts)

    root.add_subapp("/_matrix/client", mounts.client)
    root.add_subapp("/_synapse/admin", mounts.admin)
    root.add_subapp("/_matrix/federation", mounts.federation)
    root.add_subapp("/_matrix/key", mounts.key)
    root.add_subapp("/_matrix/media", mounts.media)
    root.add_subapp("/.well-known/matrix", mounts.well_known)
    return root
