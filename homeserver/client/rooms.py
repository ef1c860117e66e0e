"""The rooms area of the client-server API: one `setup` for all of its endpoints.

Endpoints are grouped by what they do, one module each: room creation
(`rooms_create`), membership (`membership`), state (`room_state`), events and
pagination (`messages`) and the directory (`directory`).
"""

from __future__ import annotations

from homeserver.appstate import Mounts

from . import directory, membership, messages, room_state, rooms_create


def setup(mounts: Mounts) -> None:
    for module in (rooms_create, membership, room_state, messages, directory):
        module.setup_routes(mounts.client)
