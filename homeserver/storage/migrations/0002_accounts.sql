-- Accounts: user-interactive auth sessions, registration tokens, login tokens, and the
-- refresh-token chain (which refresh token replaced which, for rotation).

-- One UIA session: what the client already proved (completed stages, JSON list) and what
-- the server learnt on the way (data, JSON object: the authenticated user, the
-- registration token used...). `uri`/`method` bind the session to one operation.
CREATE TABLE uia_sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    uri TEXT NOT NULL,
    method TEXT NOT NULL,
    completed TEXT NOT NULL DEFAULT '[]',
    data TEXT NOT NULL DEFAULT '{}',
    created_ts BIGINT NOT NULL
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);

-- Synapse's registration tokens: NULL uses_allowed = unlimited, NULL expiry = never.
-- `pending` counts UIA sessions that completed the token stage but not registration yet.
CREATE TABLE registration_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

-- Short-lived, single-use tokens for the m.login.token login flow.
CREATE TABLE login_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    expiry_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_expiry ON login_tokens (expiry_ts);

-- Rotation: the refresh token that replaced this one (set by /refresh).
ALTER TABLE refresh_tokens ADD COLUMN next_token_id BIGINT;
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_id);
