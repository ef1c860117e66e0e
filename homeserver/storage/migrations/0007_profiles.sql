-- Profiles area: the user directory index (which rooms make their members findable
-- by everyone, remote users' display names) and content reports.
-- (Local users' profiles live in `profiles`, 0001.)

-- One row per room with a join_rules or history_visibility state event; is_public when
-- the join rule is "public" or history is "world_readable" (the spec's visibility rule).
-- The event IDs record what the flag was computed from, so a restart can find stale rows.
CREATE TABLE user_directory_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    join_rules_event_id TEXT,
    history_visibility_event_id TEXT,
    is_public BOOLEAN NOT NULL
);
CREATE INDEX user_directory_rooms_public ON user_directory_rooms (room_id) WHERE is_public;

-- Remote users as their latest join event shows them.
CREATE TABLE user_directory_remote_profiles (
    user_id TEXT NOT NULL PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
);

-- Content reports (POST /rooms/{id}/report[/{eventId}], /users/{id}/report), kept for
-- server admins. kind is 'event', 'room' or 'user'.
CREATE TABLE content_reports (
    id {{auto_id}},
    kind TEXT NOT NULL,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user_id TEXT,
    reason TEXT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX content_reports_ts ON content_reports (received_ts);
