"""Inbound server-server HTTP: the /_matrix/federation and /_matrix/key sub-apps.

`setup(mounts)` mounts the federation API (X-Matrix authentication, then one module per
area of the spec); `keys.setup` mounts the key API. homeserver/app.py lists both. The
services the handlers read are built by homeserver/composition.py.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import Mounts

from . import (
    complexity,
    events,
    hierarchy,
    media,
    membership,
    openid,
    public_rooms,
    queries,
    third_party,
    transactions,
    version,
)
from .auth_middleware import x_matrix_middleware


def _authenticated(mounts: Mounts) -> web.Application:
    """The /_matrix/federation sub-app, with X-Matrix authentication (once)."""
    fed = mounts.federation
    if x_matrix_middleware not in fed.middlewares:
        fed.middlewares.append(x_matrix_middleware)
    return fed


def setup(mounts: Mounts) -> None:
    """Mount the inbound server-server API under /_matrix/federation (but its media
    endpoints: `setup_media`)."""
    fed = _authenticated(mounts)
    modules = (
        transactions,
        membership,
        events,
        queries,
        public_rooms,
        hierarchy,
        version,
        openid,
        third_party,
        complexity,
    )
    for module in modules:
        module.setup_routes(fed)


def setup_media(mounts: Mounts) -> None:
    """Mount /_matrix/federation/v1/media/...: other servers' downloads of our media,
    served by whatever serves the media store (a media worker too, as Synapse's)."""
    media.setup_routes(_authenticated(mounts))
