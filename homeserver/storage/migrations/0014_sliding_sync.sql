-- Simplified sliding sync (MSC4186).
--
-- room_bump_stamps: the stream ordering of each room's newest event of a kind that
-- moves it up a room list (messages, encrypted events, stickers, call invites, polls,
-- live locations, the create event), written with the event.
CREATE TABLE room_bump_stamps (
    room_id TEXT NOT NULL PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
INSERT INTO room_bump_stamps (room_id, stream_ordering)
    SELECT room_id, MAX(stream_ordering) FROM events
    WHERE type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
                   'm.call.invite', 'm.poll.start', 'org.matrix.msc3381.poll.start',
                   'm.beacon', 'org.matrix.msc3672.beacon')
      AND NOT outlier AND rejected_reason IS NULL AND stream_ordering > 0
    GROUP BY room_id;

-- One row per position a connection handed out: the streams it covered and, per room,
-- what was sent (JSON). A connection is (user, device, conn_id); a request names the
-- position it acknowledges, and older positions of its connection are dropped.
CREATE TABLE sliding_sync_positions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    token TEXT NOT NULL,
    rooms TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, pos)
);
CREATE INDEX sliding_sync_positions_age ON sliding_sync_positions (created_ts);
