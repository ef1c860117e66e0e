"""0069: stream positions that outlive their rows (storage/stream_marks.py).

Event, receipt and account-data positions are allocated as the newest stored one + 1.
Deleting a room removes its rows; when they held a stream's newest positions (the
deletion's own kicks are the newest events), the next write would get a position
clients' tokens have already passed, and no incremental sync would ever show it.
`stream_marks` keeps the newest position a deletion removed, and allocation starts
above it.

On PostgreSQL the event position functions of 0068 are replaced so that the
sequence is raised to the mark too and the visible position may reach it.
"""

from __future__ import annotations

from homeserver.storage.database import Connection

_TABLE = """
CREATE TABLE stream_marks (
    stream TEXT NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
)
"""

# The newest stored event position, deleted rows' included.
_STORED = """
CREATE OR REPLACE FUNCTION stored_event_position() RETURNS BIGINT AS $$
    SELECT GREATEST(
        (SELECT COALESCE(MAX(stream_ordering), 0) FROM events),
        (SELECT COALESCE(MAX(position), 0) FROM stream_marks WHERE stream = 'events'))
$$ LANGUAGE sql STABLE
"""

_TOP = """
CREATE OR REPLACE FUNCTION event_positions_top() RETURNS BIGINT AS $$
DECLARE
    top BIGINT;
    called BOOLEAN;
    stored BIGINT;
BEGIN
    SELECT last_value, is_called INTO top, called FROM event_stream_positions;
    IF NOT called THEN
        top := top - 1;
    END IF;
    stored := stored_event_position();
    IF stored > top THEN
        PERFORM setval('event_stream_positions', stored);
        top := stored;
    END IF;
    RETURN top;
END $$ LANGUAGE plpgsql
"""

_VISIBLE = """
CREATE OR REPLACE FUNCTION visible_event_position(guard BIGINT, flight INTEGER)
RETURNS BIGINT AS $$
DECLARE
    top BIGINT;
    low BIGINT;
BEGIN
    PERFORM pg_advisory_lock(guard);
    BEGIN
        top := event_positions_top();
        SELECT MIN(top - ((top - l.objid::BIGINT) % 2147483648)) INTO low
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = flight::OID
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        PERFORM pg_advisory_unlock(guard);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(guard);
    RETURN LEAST(top, COALESCE(low - 1, top), stored_event_position());
END $$ LANGUAGE plpgsql
"""


async def upgrade(conn: Connection) -> None:
    await conn.execute(_TABLE)
    if conn.dialect.name != "postgres":
        return
    for statement in (_STORED, _TOP, _VISIBLE):
        await conn.execute(statement)
