-- Core schema: rooms, events and their graph, state groups, current state and
-- memberships, accounts, server keys, transactions and the federation outbox.
-- Written once for SQLite and PostgreSQL; {{auto_id}} / {{bigint_pk}} come from dialect.py.

CREATE TABLE rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);
CREATE INDEX rooms_public ON rooms (room_id) WHERE is_public;

CREATE TABLE room_aliases (
    room_alias TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT,
    servers TEXT NOT NULL -- JSON list of server names
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- One row per event we hold. stream_ordering is the global, monotonic position used by
-- sync and pagination (backfilled events get negative positions so sync never sees them).
CREATE TABLE events (
    stream_ordering {{bigint_pk}},
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    outlier BOOLEAN NOT NULL,
    soft_failed BOOLEAN NOT NULL,
    rejected_reason TEXT,
    redacted_because TEXT,
    json TEXT NOT NULL -- the PDU exactly as received/built
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE event_relations (
    event_id TEXT NOT NULL PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    aggregation_key TEXT
);
CREATE INDEX event_relations_target ON event_relations (relates_to_id, rel_type);

-- State groups: a group is either a full snapshot (chain_len = 0) or a delta on
-- prev_group (chain_len = prev's chain_len + 1). A NULL event_id in a delta removes a key.
CREATE TABLE state_groups (
    id {{auto_id}},
    room_id TEXT NOT NULL,
    prev_group BIGINT REFERENCES state_groups (id),
    chain_len INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL REFERENCES state_groups (id),
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (state_group, type, state_key)
);

-- The state after each event.
CREATE TABLE event_to_state_groups (
    event_id TEXT NOT NULL PRIMARY KEY,
    state_group BIGINT NOT NULL REFERENCES state_groups (id)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);
CREATE INDEX room_memberships_room ON room_memberships (room_id, membership);

CREATE TABLE users (
    user_id TEXT NOT NULL PRIMARY KEY,
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE profiles (
    user_id TEXT NOT NULL PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT,
    custom TEXT NOT NULL DEFAULT '{}' -- JSON object of extra profile fields
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE refresh_tokens (
    id {{auto_id}},
    token TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE access_tokens (
    id {{auto_id}},
    token TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT,
    valid_until_ms BIGINT,
    refresh_token_id BIGINT REFERENCES refresh_tokens (id),
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_token_id);

CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- Client transaction IDs; device_id '' stands for "no device".
CREATE TABLE client_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX client_txns_created ON client_txns (created_ts);

CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_received ON federation_inbound_txns (received_ts);

-- Durable outbox: one row per PDU (event_id) or EDU (JSON) waiting for a destination.
CREATE TABLE federation_outbox (
    id {{auto_id}},
    destination TEXT NOT NULL,
    event_id TEXT,
    edu TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_dest ON federation_outbox (destination, id);

CREATE TABLE destination_retry (
    destination TEXT NOT NULL PRIMARY KEY,
    failure_ts BIGINT,
    retry_last_ts BIGINT NOT NULL,
    retry_interval_ms BIGINT NOT NULL
);
