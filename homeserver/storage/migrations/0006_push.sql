-- Push: users' own push rules and their changes to the server-default rules, pushers,
-- per-user push actions of events (unread notification counts, /notifications) and
-- per-user read positions that clear them.

-- User-defined rules; priority orders rules of one kind (lower = more important).
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    conditions TEXT NOT NULL, -- JSON list (override/underride)
    pattern TEXT, -- content rules
    actions TEXT NOT NULL, -- JSON list
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to server-default rules (rule IDs are unique across kinds).
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN, -- NULL: as the server default says
    actions TEXT, -- JSON list; NULL: as the server default says
    PRIMARY KEY (user_id, rule_id)
);

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL, -- JSON object
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);

-- One row per (user, event) whose actions notify or highlight.
-- thread_id: 'main' for the main timeline, else the thread root's event ID.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL, -- JSON list
    notif BOOLEAN NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_ordering);

-- How far a user has read a room: thread_id '' is an unthreaded receipt (covers every
-- thread); 'main' or a thread root covers that thread only. Fed by m.read and
-- m.read.private receipts and by the user's own events; only ever moves forwards.
CREATE TABLE push_read_positions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
