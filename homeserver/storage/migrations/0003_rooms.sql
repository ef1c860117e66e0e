-- Rooms area (client API): forgotten rooms, and indexes for the reads the room
-- endpoints make (/timestamp_to_event, the sending device's transaction ID per event).

-- A user who left a room and called /forget; cleared when they join or are invited again.
CREATE TABLE room_forgotten (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    forgotten_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- /timestamp_to_event: the closest event of a room to a point in time.
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

-- unsigned.transaction_id: which transaction (and device) created an event.
CREATE INDEX client_txns_event ON client_txns (event_id);
