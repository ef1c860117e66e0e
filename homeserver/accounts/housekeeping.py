"""Periodic clean-up of the accounts area: expired UIA sessions, login tokens and
email validation sessions.

Run as one background task owned by the composition module (stopped at shutdown).
"""

from __future__ import annotations

import asyncio
import logging

from homeserver.accounts.threepids import ThreepidService
from homeserver.accounts.uia import UserInteractiveAuth
from homeserver.storage.account_auth import AccountAuthStore

logger = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 15 * 60


async def housekeeping(
    uia: UserInteractiveAuth,
    auth_store: AccountAuthStore,
    threepids: ThreepidService | None = None,
    interval_s: float = HOUSEKEEPING_INTERVAL_S,
) -> None:
    """Drop expired UIA sessions, login tokens and email validations now and every
    `interval_s`."""
    while True:
        try:
            await uia.expire_sessions()
            await auth_store.delete_expired_login_tokens()
            if threepids is not None:
                await threepids.expire_sessions()
        except Exception:
            logger.exception("accounts housekeeping failed; retrying later")
        await asyncio.sleep(interval_s)
