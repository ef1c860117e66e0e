"""Federation destinations as admins see them: every server we delivered to or failed
to reach, its backoff, the rooms we share with it, and "retry now"."""

from __future__ import annotations

from typing import Any

from homeserver.errors import not_found
from homeserver.storage.destinations import Destination, DestinationStore

from .paging import Page, page_json
from .ports import OutboundFederation


def destination_json(d: Destination) -> dict[str, Any]:
    return {
        "destination": d.destination,
        "retry_last_ts": d.retry_last_ts,
        "retry_interval": d.retry_interval,
        "failure_ts": d.failure_ts,
        "last_successful_stream_ordering": d.last_successful_stream_ordering,
    }


class AdminDestinations:
    def __init__(self, store: DestinationStore, outbound: OutboundFederation | None) -> None:
        self._store = store
        self._outbound = outbound

    async def list(
        self, page: Page, search: str | None, order_by: str, descending: bool
    ) -> dict[str, Any]:
        rows, total = await self._store.list_destinations(
            page.start, page.limit, search=search, order_by=order_by, descending=descending
        )
        body = {"destinations": [destination_json(d) for d in rows], "total": total}
        return page_json(body, page, len(rows), total)

    async def get(self, destination: str) -> dict[str, Any]:
        found = await self._store.get_destination(destination)
        if found is None:
            raise not_found("Unknown destination")
        return destination_json(found)

    async def rooms(self, destination: str, page: Page, descending: bool) -> dict[str, Any]:
        if await self._store.get_destination(destination) is None:
            raise not_found("Unknown destination")
        rows, total = await self._store.destination_rooms(
            destination, page.start, page.limit, descending=descending
        )
        body = {
            "rooms": [{"room_id": r, "stream_ordering": so} for r, so in rows],
            "total": total,
        }
        return page_json(body, page, len(rows), total)

    async def reset_connection(self, destination: str) -> None:
        """Forget the backoff so the sender retries at once (404 for unknown servers)."""
        if await self._store.get_destination(destination) is None:
            raise not_found("Unknown destination")
        if self._outbound is not None:
            await self._outbound.reset_connection(destination)
