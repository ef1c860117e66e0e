"""What the admin services need from the federation adapter (which the core never
imports): the outbound sender's backoff control and its counters."""

from __future__ import annotations

from typing import Protocol


class OutboundFederation(Protocol):
    """federation.sender.FederationSender, as the admin API and the metrics see it."""

    transactions_sent: int
    transactions_failed: int
    pdus_sent: int
    edus_sent: int

    @property
    def destinations_backing_off(self) -> int: ...

    async def reset_connection(self, destination: str) -> None: ...
