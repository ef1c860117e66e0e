"""The profile area's services as app state, built once after the core services."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from homeserver.appstate import CONFIG, DATABASE
from homeserver.services import LOCAL_EVENTS, PERSISTER, STORES
from homeserver.storage.user_directory import UserDirectoryStore

from .directory import UserDirectory
from .ports import REMOTE_PROFILES
from .service import ProfileService

PROFILES = web.AppKey("profiles", ProfileService)
USER_DIRECTORY = web.AppKey("user_directory", UserDirectory)


async def profiles_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build ProfileService and UserDirectory; index what changed while we were down."""
    config = app[CONFIG]
    stores = app[STORES]
    directory = UserDirectory(stores, UserDirectoryStore(app[DATABASE]), config.server_name)
    app[PERSISTER].add_listener(directory)
    await directory.reconcile()
    app[USER_DIRECTORY] = directory
    app[PROFILES] = ProfileService(
        stores, app[LOCAL_EVENTS], config.server_name, remote=lambda: app.get(REMOTE_PROFILES)
    )
    try:
        yield
    finally:
        await directory.close()


def add_profiles_ctx(root: web.Application) -> None:
    """Register the lifetime once, whichever of the profile/directory areas asks first."""
    if profiles_ctx not in root.cleanup_ctx:
        root.cleanup_ctx.append(profiles_ctx)
