-- A destination that is backing off (destination_retry.failure_ts set) gets no new
-- PDU rows in federation_outbox: the newest event of each room for it is kept here
-- instead, and sent once it answers again (it fetches what lies before from us, with
-- get_missing_events or backfill). Its queue so stays bounded however long it is down;
-- a backlog of an up destination past a bound is folded in here too
-- (federation/sender.py, MAX_QUEUED_PDUS).
CREATE TABLE federation_catchup (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);

-- The EDU's type, so that a backlog can be trimmed of the EDUs that only matter while
-- fresh (NULL for PDUs, and for EDUs queued before this column).
ALTER TABLE federation_outbox ADD COLUMN edu_type TEXT;
