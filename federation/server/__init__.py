"""Inbound server-server HTTP: the /_matrix/federation and /_matrix/key sub-apps.

`setup(mounts)` mounts the federation API (X-Matrix authentication, then one module per
area of the spec); `keys.setup` mounts the key API. homeserver/app.py lists both. The
services the handlers read are built by homeserver/composition.py.
"""

from __future__ import annotations

from homeserver.appstate import Mounts

from . import (
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


def setup(mounts: Mounts) -> None:
    """Mount the inbound server-server API under /_matrix/federation."""
    fed = mounts.federation
    fed.middlewares.append(x_matrix_middleware)
    modules = (
        transactions,
        membership,
        events,
        queries,
        public_rooms,
        hierarchy,
        version,
        openid,
        media,
        third_party,
    )
    for module in modules:
        module.setup_routes(fed)
