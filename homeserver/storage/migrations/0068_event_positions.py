"""0068: event stream positions that several processes allocate at once (PostgreSQL).

With event persisters (homeserver.replication.writers) the event transactions of a
deployment no longer take turns: each claims its positions from a sequence and
registers the first one as in flight, and readers are told only the positions below
the lowest one still in flight (storage/event_positions.py says why and how). The
functions run the claim and the read under a short guard lock so that a position is
never handed out without being registered; a PL/pgSQL exception block releases the
guard whatever fails in between (a cancelled statement too).

SQLite (one process) allocates as before, `MAX(stream_ordering) + 1` under its write
lock: nothing to create there.
"""

from __future__ import annotations

from homeserver.storage.database import Connection

_SEQUENCE = "CREATE SEQUENCE IF NOT EXISTS event_stream_positions"

# The newest position handed out, raised first to the newest stored one: positions
# allocated as MAX + 1 (a single process, or `port-db`) never come out again.
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
    SELECT COALESCE(MAX(stream_ordering), 0) INTO stored FROM events;
    IF stored > top THEN
        PERFORM setval('event_stream_positions', stored);
        top := stored;
    END IF;
    RETURN top;
END $$ LANGUAGE plpgsql
"""

# `n` consecutive positions for the calling transaction: the first is returned and
# held as a shared transaction-level advisory lock (flight, first mod 2^31) until the
# transaction ends, which is how other sessions know it is in flight.
_CLAIM = """
CREATE OR REPLACE FUNCTION claim_event_positions(n INTEGER, guard BIGINT, flight INTEGER)
RETURNS BIGINT AS $$
DECLARE
    first BIGINT;
BEGIN
    PERFORM pg_advisory_lock(guard);
    BEGIN
        first := event_positions_top() + 1;
        PERFORM setval('event_stream_positions', first + n - 1);
        PERFORM pg_advisory_xact_lock_shared(flight, (first % 2147483648)::INTEGER);
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        PERFORM pg_advisory_unlock(guard);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(guard);
    RETURN first;
END $$ LANGUAGE plpgsql
"""

# The highest position at or below which every claimed position has committed or
# rolled back: one below the lowest claim still in flight, else the newest handed out;
# never above the newest stored (a claim rolled back at the top is not a position a
# token may pass: one process allocating MAX + 1 again would hand it out).
_VISIBLE = """
CREATE OR REPLACE FUNCTION visible_event_position(guard BIGINT, flight INTEGER)
RETURNS BIGINT AS $$
DECLARE
    top BIGINT;
    low BIGINT;
    stored BIGINT;
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
    SELECT COALESCE(MAX(stream_ordering), 0) INTO stored FROM events;
    RETURN LEAST(top, COALESCE(low - 1, top), stored);
END $$ LANGUAGE plpgsql
"""


async def upgrade(conn: Connection) -> None:
    if conn.dialect.name != "postgres":
        return
    for statement in (_SEQUENCE, _TOP, _CLAIM, _VISIBLE):
        await conn.execute(statement)
