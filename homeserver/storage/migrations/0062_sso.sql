-- Signing in with identity providers (homeserver/accounts/sso.py).
-- Which of our users an identity provider's subject is (Synapse's user_external_ids).
CREATE TABLE user_external_ids (
    auth_provider TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (auth_provider, external_id)
);
CREATE INDEX user_external_ids_by_user ON user_external_ids (user_id);

-- A sign-in in progress: the state we sent the provider, bound to the browser that
-- started it (browser_key, in a cookie), with the nonce and PKCE verifier to check
-- what comes back. Kept SSO_SESSION_LIFETIME_MS; expired rows are dropped.
CREATE TABLE sso_sessions (
    state TEXT NOT NULL PRIMARY KEY,
    idp_id TEXT NOT NULL,
    browser_key TEXT NOT NULL,
    nonce TEXT NOT NULL,
    code_verifier TEXT,
    client_redirect_url TEXT,
    ui_auth_session TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX sso_sessions_by_age ON sso_sessions (created_ts);
