"""The push area's services as typed app state, built once by `push_ctx`.

`install(mounts)` adds that lifetime once, whichever of the push client modules
(rules, pushers, notifications) is set up first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from homeserver.appstate import CONFIG, DATABASE, Mounts
from homeserver.services import PERSISTER, STORES
from homeserver.storage.push import PushStore
from homeserver.sync.extensions import SYNC_EXTENSIONS

from .actions import ActionGenerator
from .rules_service import PushRulesService
from .sync_extension import UnreadCountsExtension

PUSH_STORE = web.AppKey("push_store", PushStore)
PUSH_RULES = web.AppKey("push_rules", PushRulesService)
PUSH_ACTIONS = web.AppKey("push_actions", ActionGenerator)


async def push_ctx(app: web.Application) -> AsyncIterator[None]:
    store = PushStore(app[DATABASE])
    rules = PushRulesService(store)
    generator = ActionGenerator(app[STORES], store, rules, app[CONFIG].server_name)
    app[PUSH_STORE] = store
    app[PUSH_RULES] = rules
    app[PUSH_ACTIONS] = generator
    app[PERSISTER].add_listener(generator)
    app[SYNC_EXTENSIONS].append(UnreadCountsExtension(generator, store))
    try:
        yield
    finally:
        await generator.close()


def install(mounts: Mounts) -> None:
    """Add `push_ctx` to the root app once."""
    if push_ctx not in mounts.root.cleanup_ctx:
        mounts.root.cleanup_ctx.append(push_ctx)
