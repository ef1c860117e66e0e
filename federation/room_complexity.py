"""Asking other servers how complex a room is: homeserver.rooms.complexity's
RoomComplexityLookup, over Synapse's `GET /_matrix/federation/unstable/rooms/{roomId}/
complexity` (`{"v1": state events / 500}`).

Asked before a local user joins a remote room under `limit_remote_rooms`, so it sits
in front of every such join and must never hold one up for long: each server gets
`REQUEST_TIMEOUT_S`, all of them together `DEADLINE_S`, and an answer is read up to
federation.client.MAX_SMALL_RESPONSE_BYTES. A server that fails, refuses (Synapse
answers 404 for rooms neither public nor world-readable) or answers without a usable
"v1" is passed over, as in Synapse; None when no server answered, and the join then
goes ahead (the state is measured once we hold it).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from federation.client import FederationError, fed_path

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
DEADLINE_S = 20.0


def _v1(body: Any) -> float | None:
    """The answer's v1 when it is a finite number of 0 or more."""
    value = body.get("v1") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


class FederationRoomComplexity:
    """RoomComplexityLookup with our federation client (`get_json(destination, path,
    timeout=...)`)."""

    def __init__(
        self, client: Any, *, timeout_s: float = REQUEST_TIMEOUT_S, deadline_s: float = DEADLINE_S
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s

    async def get_room_complexity(self, servers: list[str], room_id: str) -> float | None:
        path = fed_path("/_matrix/federation/unstable/rooms/{}/complexity", room_id)
        try:
            async with asyncio.timeout(self._deadline_s):
                for server in dict.fromkeys(servers):
                    try:
                        body = await self._client.get_json(server, path, timeout=self._timeout_s)
                    except FederationError as e:
                        log.info("room complexity of %s from %s: %s", room_id, server, e)
                        continue
                    value = _v1(body)
                    if value is not None:
                        return value
                    log.info("room complexity of %s from %s: no usable v1", room_id, server)
        except TimeoutError:
            log.info("room complexity of %s: no answer within %.0f s", room_id, self._deadline_s)
        return None
