-- Email addresses our users validated with us (homeserver/accounts/threepids.py): an
-- address belongs to at most one user (login by email, password reset by email).
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_by_user ON user_threepids (user_id);

-- A validation in progress: the client's requestToken, the mailed token, and when the
-- link was confirmed. One per (purpose, address, client_secret), so a retried request
-- answers the same sid; expired rows are dropped by the accounts housekeeping.
CREATE TABLE threepid_validation_sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    purpose TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    token TEXT NOT NULL,
    send_attempt BIGINT NOT NULL,
    next_link TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    validated_at BIGINT
);
CREATE UNIQUE INDEX threepid_validation_by_request
    ON threepid_validation_sessions (purpose, medium, address, client_secret);
CREATE INDEX threepid_validation_by_expiry ON threepid_validation_sessions (expires_at);
