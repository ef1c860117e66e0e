"""Outbound EDUs: the ephemeral services hand typing, receipts and presence to the
`EduOutbox`, which passes them to federation's sender (a port: the core never imports
federation; the composition module gives the outbox an
`async (edu_type, content, destinations) -> None`). Failures are logged and swallowed:
a typing notification must never fail the client request that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

EduSender = Callable[[str, dict[str, Any], list[str]], Awaitable[None]]


class EduOutbox:
    """Sends an EDU to the other servers among `hosts` (nowhere without federation)."""

    def __init__(self, send: EduSender | None, server_name: str) -> None:
        self._send = send
        self._server_name = server_name

    async def send(self, edu_type: str, content: dict[str, Any], hosts: Iterable[str]) -> None:
        destinations = sorted({h for h in hosts if h and h != self._server_name})
        if not destinations or self._send is None:
            return
        try:
            await self._send(edu_type, content, destinations)
        except Exception:
            log.exception("EDU sender failed for %s", edu_type)
