"""DestinationStore: the federation destinations admins see (migration 0050).

A destination is listed once the sender delivered a transaction to it
(`federation_destinations`) or failed to (`destination_retry`, the sender's backoff
state); rooms come from `destination_rooms`, which the sender updates with each
delivered event (`TransactionStore.ack_delivery`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .database import Database

# Synapse's order_by values -> SQL expression over the joined row.
DESTINATION_ORDER_COLUMNS = {
    "destination": "d.destination",
    "retry_last_ts": "COALESCE(r.retry_last_ts, 0)",
    "retry_interval": "COALESCE(r.retry_interval_ms, 0)",
    "failure_ts": "r.failure_ts",
    "last_successful_stream_ordering": "f.last_successful_stream_ordering",
}

_FROM = (
    " FROM (SELECT destination FROM federation_destinations"
    " UNION SELECT destination FROM destination_retry) d"
    " LEFT JOIN federation_destinations f ON f.destination = d.destination"
    " LEFT JOIN destination_retry r ON r.destination = d.destination"
)
_SELECT = (
    "SELECT d.destination, r.retry_last_ts, r.retry_interval_ms, r.failure_ts,"
    " f.last_successful_stream_ordering, f.last_success_ts"
)


@dataclass(frozen=True)
class Destination:
    destination: str
    retry_last_ts: int
    retry_interval: int
    failure_ts: int | None
    last_successful_stream_ordering: int | None
    last_success_ts: int | None


def _destination(row: Any) -> Destination:
    return Destination(
        destination=row[0],
        retry_last_ts=int(row[1] or 0),
        retry_interval=int(row[2] or 0),
        failure_ts=int(row[3]) if row[3] is not None else None,
        last_successful_stream_ordering=int(row[4]) if row[4] is not None else None,
        last_success_ts=int(row[5]) if row[5] is not None else None,
    )


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DestinationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_destinations(
        self,
        start: int,
        limit: int,
        *,
        search: str | None = None,
        order_by: str = "destination",
        descending: bool = False,
    ) -> tuple[list[Destination], int]:
        column = DESTINATION_ORDER_COLUMNS[order_by]
        where, args = "", []
        if search:
            where = " WHERE LOWER(d.destination) LIKE $1 ESCAPE '\\'"
            args.append(f"%{_escape_like(search.lower())}%")
        total = await self.db.fetchval(f"SELECT COUNT(*){_FROM}{where}", *args)
        direction = "DESC" if descending else "ASC"
        nulls = "NULLS FIRST" if descending else "NULLS LAST"
        n = len(args)
        rows = await self.db.fetch(
            f"{_SELECT}{_FROM}{where} ORDER BY {column} {direction} {nulls},"
            f" d.destination ASC LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            start,
        )
        return [_destination(r) for r in rows], int(total or 0)

    async def get_destination(self, destination: str) -> Destination | None:
        row = await self.db.fetchrow(f"{_SELECT}{_FROM} WHERE d.destination = $1", destination)
        return None if row is None else _destination(row)

    async def destination_rooms(
        self, destination: str, start: int, limit: int, *, descending: bool = False
    ) -> tuple[list[tuple[str, int]], int]:
        total = await self.db.fetchval(
            "SELECT COUNT(*) FROM destination_rooms WHERE destination = $1", destination
        )
        direction = "DESC" if descending else "ASC"
        rows = await self.db.fetch(
            "SELECT room_id, stream_ordering FROM destination_rooms WHERE destination = $1"
            f" ORDER BY room_id {direction} LIMIT $2 OFFSET $3",
            destination,
            limit,
            start,
        )
        return [(r[0], int(r[1])) for r in rows], int(total or 0)
