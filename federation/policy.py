"""Asking a Policy Server to sign an event: `POST /_matrix/policy/v1/sign` (spec v1.18).

Implements homeserver.rooms.policy_server.PolicyServerPort. A refusal (a 4xx with a
Matrix error) is raised as that same status and errcode, for the client to see
verbatim; anything else (no answer, a 5xx, garbage) raises FederationError, which the
core treats as "not signed".
"""

from __future__ import annotations

from typing import Any

from federation.client import FederationClient, FederationError
from homeserver.errors import MatrixError

SIGN_PATH = "/_matrix/policy/v1/sign"
SIGN_TIMEOUT_S = 10.0


class FederationPolicyServers:
    def __init__(self, client: FederationClient) -> None:
        self._client = client

    async def ask_to_sign(self, via: str, pdu: dict[str, Any]) -> Any:
        try:
            return await self._client.post_json(via, SIGN_PATH, pdu, timeout=SIGN_TIMEOUT_S)
        except FederationError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.errcode:
                body = exc.body if isinstance(exc.body, dict) else {}
                reason = body.get("error")
                message = (
                    reason[:500] if isinstance(reason, str) else "Refused by the policy server"
                )
                raise MatrixError(exc.status, exc.errcode[:128], message) from None
            raise
