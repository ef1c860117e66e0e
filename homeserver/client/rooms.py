"""The rooms area of the client-server API: one `setup` for all of its endpoints.

Endpoints are grouped by what they do, one module each: room creation
(`rooms_create`), membership (`membership`), state (`room_state`), events and
pagination (`messages`) and the directory (`directory`). Their services are built by
`room_services.rooms_ctx` after the core services.
"""

from __future__ import annotations

from homeserver.appstate import Mounts

from . import directory, membership, messages, room_state, rooms_create
from .room_services import rooms_ctx


def setup(mounts: Mounts) -> None:
    mounts.root.cleanup_ctx.append(rooms_ctx)
    for module in (rooms_create, membership, room_state, messages, directory):
        module.setup_routes(mounts.client)
