"""Outbound EDU hooks: federation registers callables; ephemeral services call them.

The core never imports federation; instead `EDU_SENDERS` holds
`async (edu_type, content, destinations) -> None` callables. Failures are logged and
swallowed: a typing notification must never fail the client request that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

EduSender = Callable[[str, dict[str, Any], list[str]], Awaitable[None]]
EDU_SENDERS: web.AppKey[list[EduSender]] = web.AppKey("edu_senders")


class EduOutbox:
    """Fans an EDU out to every registered sender (the list is shared and may grow)."""

    def __init__(self, senders: list[EduSender], server_name: str) -> None:
        self._senders = senders
        self._server_name = server_name

    async def send(self, edu_type: str, content: dict[str, Any], hosts: Iterable[str]) -> None:
        destinations = sorted({h for h in hosts if h and h != self._server_name})
        if not destinations or not self._senders:
            return
        for sender in list(self._senders):
            try:
                await sender(edu_type, content, destinations)
            except Exception:
                log.exception("EDU sender failed for %s", edu_type)
