-- Rooms' m.room.retention policies (MSC1763): the purge jobs and the client-side
-- expiry read the current retention event of rooms (storage/room_retention.py). A
-- partial index holds only those rows, so the lookup costs nothing to other state.
CREATE INDEX current_state_retention ON current_state (room_id)
    WHERE type = 'm.room.retention';
