"""Typed application state keys and the `Mounts` handed to every area's `setup`.

A leaf module (no imports of areas) so handlers can read shared state with
`request.config_dict[CONFIG]` without importing the composition root (homeserver.app),
which would be circular. Each area defines the AppKeys for the services it owns next to
those services; only the state that every area shares lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from homeserver.config import Config, ListenerConfig

if TYPE_CHECKING:
    from homeserver.storage import Database

CONFIG = web.AppKey("config", Config)
# The open, migrated database (set by the database cleanup_ctx before any area starts).
DATABASE: web.AppKey[Database] = web.AppKey("database")
# One pooled client session for every outbound HTTP request.
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
# Bound local port -> the listener serving it, filled in by the CLI once sockets are
# bound. Unset in tests (aiohttp_client), where every resource is served.
LISTENERS: web.AppKey[dict[int, ListenerConfig]] = web.AppKey("listeners")


@dataclass(frozen=True)
class Mounts:
    """Where an area attaches its routes and lifetimes; built once by create_app.

    - `root`: the top-level app; add `cleanup_ctx` entries and shared state here.
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
