"""Stream positions that outlive their rows (migration 0069).

Events, receipts and account data are numbered from their table's newest position
(`MAX + 1`): a stream token is "everything up to N", and the next write is N + 1. A
room deletion removes the room's rows from those tables; when they held a stream's
newest positions (the deletion's own kicks are the newest events), the next write
would be numbered at or below positions clients' tokens have already passed, and no
incremental sync would ever show it. So before deleting, the purge notes each
stream's newest position in `stream_marks`, and allocation and "the current position"
take the greater of the newest row and the mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .database import Connection

# stream -> (table, position column): the streams numbered MAX + 1 whose rows a room
# purge deletes.
MARKED_STREAMS: dict[str, tuple[str, str]] = {
    "events": ("events", "stream_ordering"),
    "receipts": ("receipts", "stream_id"),
    "account_data": ("account_data", "stream_id"),
}


def newest_sql(stream: str) -> str:
    """A scalar subquery: the stream's newest position, deleted rows' included (NULL
    when it never had one)."""
    table, column = MARKED_STREAMS[stream]
    return (
        f"(SELECT MAX(p) FROM (SELECT MAX({column}) AS p FROM {table}"
        f" UNION ALL SELECT position FROM stream_marks WHERE stream = '{stream}') AS newest)"
    )


async def keep_newest_positions(conn: Connection) -> None:
    """Inside a transaction about to delete rows of the marked streams: remember each
    stream's newest position (never lowering a mark)."""
    for stream, (table, column) in MARKED_STREAMS.items():
        top = await conn.fetchval(f"SELECT MAX({column}) FROM {table}")
        if top is None:
            continue
        await conn.execute(
            "INSERT INTO stream_marks (stream, position) VALUES ($1, $2)"
            " ON CONFLICT (stream) DO UPDATE SET position = excluded.position"
            " WHERE stream_marks.position < excluded.position",
            stream,
            int(top),
        )


async def upsert_at_next_positions(
    conn: Connection, stream: str, upsert: str, rows: Sequence[tuple[Any, ...]]
) -> list[int]:
    """Inside the stream's write transaction: run `upsert` (`{position}` where the
    position goes) for each row, at the stream's next positions in row order; return
    them. One row is one statement (its position worked out in it); more read the
    newest position once and go in one batch."""
    column = MARKED_STREAMS[stream][1]
    if len(rows) == 1:
        position = await conn.fetchval(
            upsert.format(position=f"COALESCE({newest_sql(stream)}, 0) + 1")
            + f" RETURNING {column}",
            *rows[0],
        )
        return [int(position)]
    top = int(await conn.fetchval(f"SELECT COALESCE({newest_sql(stream)}, 0)"))
    positions = list(range(top + 1, top + 1 + len(rows)))
    await conn.executemany(
        upsert.format(position=f"${len(rows[0]) + 1}"),
        [(*row, position) for row, position in zip(rows, positions, strict=True)],
    )
    return positions
