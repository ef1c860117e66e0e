"""Synapse's admin API (/_synapse/admin) and the client API's account moderation
(/_matrix/client/v1/admin/suspend|lock): route modules only.

`setup(mounts)` registers the handlers; they authenticate a server admin, parse and
call one service of `homeserver.admin`, which homeserver/composition.py builds (through
`homeserver.admin.build`) and publishes as the AppKeys of homeserver.appstate.
"""

from __future__ import annotations

from homeserver.appstate import Mounts

from . import media, moderation, rooms, server, users


def setup(mounts: Mounts) -> None:
    for module in (users, rooms, moderation, server):
        module.add_routes(mounts.admin)
    users.add_client_routes(mounts.client)


def setup_media(mounts: Mounts) -> None:
    """The media endpoints: wherever media is served, media workers included (they
    delete the store's files; nginx sends these paths to them). None without a media
    repository (`enable_media_repo: false`), as Synapse."""
    if mounts.config.media.enable_media_repo:
        media.add_routes(mounts.admin)
