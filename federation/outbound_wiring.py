"""Plugs the outbound half of federation into the core (one cleanup_ctx).

Runs after the core services and after the inbound federation area (which builds the
keyring, the FederationClient, the receiving checks and the RemoteEventIngest), and:

- starts the transaction sender and makes it the Persister's OutboundEvents, resuming
  whatever the outbox still holds from a previous run; stops it on shutdown;
- gives the room service its remote halves: MembershipService.remote (join, invite,
  leave, knock handshakes) and RemoteEventIngest.remote (fetching missing events);
- answers remote profile lookups (REMOTE_PROFILES) and remote alias lookups
  (RoomDirectory.remote) with federation queries;
- registers the EDU sender for typing/receipts/presence (homeserver.ephemeral.edus),
  the E2EE ports (remote key queries/claims, to-device relay, device-list EDUs) and
  the backfill hook.

Nothing in `homeserver` imports this module; homeserver/app.py lists `setup` in AREAS.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from federation.appkeys import FED_CLIENT, INBOUND, INGEST
from federation.backfill import BACKFILLER, FederationBackfill
from federation.keys import SERVER_KEYS
from federation.queries import FederationQueries, FederationRemoteKeys, FederationToDevice
from federation.query_ports import RemoteDirectoryAdapter, RemoteProfilesAdapter
from federation.remote_events import FederationRemoteEvents
from federation.remote_rooms import FederationRemoteRooms
from federation.sender import SENDER, SENDER_SETTINGS, FederationSender
from homeserver.appstate import CONFIG, Mounts
from homeserver.client.room_services import ROOM_DIRECTORY, ROOM_READER
from homeserver.e2ee.ports import REMOTE_DEVICE_LISTS, REMOTE_KEYS, REMOTE_TO_DEVICE
from homeserver.ephemeral.edus import EDU_SENDERS
from homeserver.profiles.ports import REMOTE_PROFILES
from homeserver.services import (
    MEMBERSHIP,
    PERSISTER,
    ROOM_LOCKS,
    ROOM_STATE,
    STORES,
)

log = logging.getLogger(__name__)

REMOTE_EVENTS = web.AppKey("fed_remote_events", FederationRemoteEvents)
REMOTE_ROOMS = web.AppKey("fed_remote_rooms", FederationRemoteRooms)
QUERIES = web.AppKey("fed_queries", FederationQueries)


async def outbound_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    stores = app[STORES]
    missing = [repr(k) for k in (FED_CLIENT, INBOUND, INGEST) if k not in app]
    if missing:  # the inbound area builds these; without it we cannot federate at all
        log.warning("outbound federation disabled: %s not set up", ", ".join(missing))
        yield
        return
    client = app[FED_CLIENT]
    if config.federation.plain_http_for_tests:
        client.plain_http = True  # in case the client was built without the option

    sender = FederationSender(
        stores.transactions,
        stores.events,
        client,
        config.server_name,
        app.get(SENDER_SETTINGS),
    )
    app[SENDER] = sender
    app[PERSISTER].set_outbound(sender)

    remote_events = FederationRemoteEvents(client, app[INBOUND], stores.rooms.get_room_version)
    app[REMOTE_EVENTS] = remote_events
    ingest = app[INGEST]
    ingest.remote = remote_events

    remote_rooms = FederationRemoteRooms(
        client,
        app[INBOUND],
        ingest,
        stores,
        config.server_name,
        app[SERVER_KEYS].primary,
        persist_out_of_band=app[PERSISTER].persist_out_of_band_membership,
    )
    app[REMOTE_ROOMS] = remote_rooms
    app[MEMBERSHIP].remote = remote_rooms
    queries = FederationQueries(client)
    app[QUERIES] = queries
    if REMOTE_PROFILES not in app:  # tests may plug in their own
        app[REMOTE_PROFILES] = RemoteProfilesAdapter(queries)
    app[MEMBERSHIP].remote_profiles = app[REMOTE_PROFILES]
    if ROOM_DIRECTORY in app:
        app[ROOM_DIRECTORY].remote = RemoteDirectoryAdapter(queries)

    async def send_edu(edu_type: str, content: dict[str, Any], destinations: list[str]) -> None:
        await sender.send_edu(destinations, edu_type, content)

    if EDU_SENDERS not in app:
        app[EDU_SENDERS] = []
    app[EDU_SENDERS].append(send_edu)
    app[REMOTE_KEYS] = FederationRemoteKeys(client)
    app[REMOTE_TO_DEVICE] = FederationToDevice(sender)
    app[REMOTE_DEVICE_LISTS] = sender  # m.device_list_update / m.signing_key_update EDUs
    backfiller = FederationBackfill(
        remote_events,
        ingest,
        stores,
        app[PERSISTER],
        config.server_name,
        app[ROOM_STATE],
        app[ROOM_LOCKS],
    )
    app[BACKFILLER] = backfiller
    if ROOM_READER in app and hasattr(app[ROOM_READER], "backfill"):
        app[ROOM_READER].backfill = backfiller

    await sender.start()
    try:
        yield
    finally:
        await sender.stop()


def setup(mounts: Mounts) -> None:
    mounts.root.cleanup_ctx.append(outbound_ctx)
