-- Operators (the Synapse admin API): per-user moderation flags, rate-limit overrides,
-- blocked rooms, room statistics for the room list, federation destinations seen by the
-- sender, server-notice rooms and the admin's background jobs.

-- Moderation flags (Synapse's names). user_type: NULL, 'bot', 'support'.
ALTER TABLE users ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN user_type TEXT;
-- The admin user list pages by name (primary key) or creation time.
CREATE INDEX users_created ON users (created_ts);

-- POST /_synapse/admin/v1/users/{id}/override_ratelimit: 0/0 means "never limited".
CREATE TABLE ratelimit_override (
    user_id TEXT NOT NULL PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count BIGINT NOT NULL
);

-- Rooms local users may not join (or be invited to); user_id is the admin who blocked it.
CREATE TABLE blocked_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- What the admin room list shows and sorts by, derived from each room's current state
-- by homeserver.admin.room_stats (which records how far it got in room_stats_position).
CREATE TABLE room_stats (
    room_id TEXT NOT NULL PRIMARY KEY,
    name TEXT,
    topic TEXT,
    avatar TEXT,
    canonical_alias TEXT,
    encryption TEXT,
    join_rules TEXT,
    guest_access TEXT,
    history_visibility TEXT,
    room_type TEXT,
    federatable BOOLEAN NOT NULL DEFAULT TRUE,
    tombstone_successor TEXT,
    tombstoned BOOLEAN NOT NULL DEFAULT FALSE,
    joined_members BIGINT NOT NULL DEFAULT 0,
    joined_local_members BIGINT NOT NULL DEFAULT 0,
    state_events BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX room_stats_name ON room_stats (name);
CREATE INDEX room_stats_joined ON room_stats (joined_members);

CREATE TABLE room_stats_position (
    lock TEXT NOT NULL PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);

-- Every server the federation sender delivered a transaction to (its retry state lives
-- in destination_retry), and per room the newest event it delivered there.
CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    last_success_ts BIGINT,
    last_successful_stream_ordering BIGINT
);

CREATE TABLE destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX destination_rooms_room ON destination_rooms (room_id);

-- The room where the server notices user talks to each user (server_notices config).
CREATE TABLE server_notice_rooms (
    user_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL
);

-- Background jobs started through the admin API (room deletion, history purge),
-- listed by /_synapse/admin/v1/scheduled_tasks and the status endpoints.
CREATE TABLE admin_jobs (
    job_id TEXT NOT NULL PRIMARY KEY,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    resource_id TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    timestamp_ms BIGINT NOT NULL
);
CREATE INDEX admin_jobs_resource ON admin_jobs (resource_id);
