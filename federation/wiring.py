"""The federation area's `setup(mounts)`: inbound routes, X-Matrix auth, and the
cleanup_ctx that builds the keyring, federation client, inbound checks, ingest and EDU
handlers (stored under the AppKeys of federation.appkeys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from federation.appkeys import EDU_HANDLERS, FED_CLIENT, INBOUND, INGEST, KEYRING
from federation.client import FederationClient
from federation.inbound import InboundChecks
from federation.ipfilter import IPFilter
from federation.keyring import Keyring
from federation.keys import SERVER_KEYS
from federation.server import (
    events,
    hierarchy,
    membership,
    openid,
    public_rooms,
    queries,
    transactions,
    version,
)
from federation.server.auth_middleware import x_matrix_middleware
from federation.server.edus import EduDispatcher
from homeserver.appstate import CONFIG, Mounts
from homeserver.rooms.ingest import RemoteEventIngest
from homeserver.services import PERSISTER, ROOM_LOCKS, ROOM_STATE, STORES


async def federation_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    keys = app[SERVER_KEYS]
    stores = app[STORES]
    fed = config.federation
    client = FederationClient(
        config.server_name,
        keys.primary,
        ip_filter=IPFilter(
            blacklist=[str(n) for n in fed.ip_range_blacklist],
            whitelist=[str(n) for n in fed.ip_range_whitelist],
        ),
        verify_tls=fed.verify_certificates,
        custom_ca_files=[str(p) for p in fed.custom_ca_list],
    )
    keyring = Keyring(
        stores.server_keys,
        client,
        config.server_name,
        [
            {"server_name": t.server_name, "verify_keys": dict(t.verify_keys or {})}
            for t in config.keys.trusted_key_servers
        ],
        local_keys=keys.verify_keys(),
    )
    app[FED_CLIENT] = client
    app[KEYRING] = keyring
    app[INBOUND] = InboundChecks(keyring)
    app[INGEST] = RemoteEventIngest(
        stores, app[ROOM_STATE], app[PERSISTER], app[ROOM_LOCKS], remote=None
    )
    app[EDU_HANDLERS] = EduDispatcher(app, config.server_name).handlers()
    try:
        yield
    finally:
        await client.close()


def setup(mounts: Mounts) -> None:
    """Mount the inbound server-server API under /_matrix/federation."""
    fed = mounts.federation
    fed.middlewares.append(x_matrix_middleware)
    modules = (transactions, membership, events, queries, public_rooms, hierarchy, version, openid)
    for module in modules:
        module.setup_routes(fed)
    mounts.root.cleanup_ctx.append(federation_ctx)
