"""Re-authentication before replacing cross-signing keys, through the accounts area's
user-interactive auth (m.login.password)."""

from __future__ import annotations

from typing import Any

from homeserver.accounts.uia import PASSWORD, UserInteractiveAuth
from homeserver.errors import MatrixError

from .keys import Reauth

DEVICE_SIGNING_URI = "/keys/device_signing/upload"


def uia_reauth(uia: UserInteractiveAuth | None) -> Reauth:
    """A `Reauth` that runs one UIA step (raising the 401 challenge until a password
    stage is completed) and consumes the session once it passes."""

    async def check(user_id: str, auth: Any) -> None:
        if uia is None:
            raise MatrixError(
                401,
                "M_UNAUTHORIZED",
                "Re-authentication is not available on this server",
                flows=[{"stages": [PASSWORD]}],
                params={},
            )
        result = await uia.authenticate(
            auth, [[PASSWORD]], uri=DEVICE_SIGNING_URI, method="POST", user_id=user_id
        )
        await uia.finish(result)

    return check
