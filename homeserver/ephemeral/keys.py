"""AppKeys of the ephemeral services, for handlers and for federation's inbound EDUs.

Federation applies incoming EDUs with `app[TYPING].set_remote(...)`,
`await app[RECEIPTS].apply_remote(...)` and `await app[PRESENCE].set_remote(...)`, and
appends its outbound sender to `app[EDU_SENDERS]` (homeserver.ephemeral.edus).
"""

from __future__ import annotations

from aiohttp import web

from .account_data import AccountDataService
from .presence import PresenceService
from .receipts import ReceiptsService
from .typing import TypingService

TYPING = web.AppKey("typing", TypingService)
RECEIPTS = web.AppKey("receipts", ReceiptsService)
PRESENCE = web.AppKey("presence", PresenceService)
ACCOUNT_DATA = web.AppKey("account_data", AccountDataService)
