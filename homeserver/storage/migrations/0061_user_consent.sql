-- Which version of the server's policy each user accepted at registration, and when
-- (the m.login.terms stage; Synapse keeps these on its users table). The admin API
-- shows them as consent_version and consent_ts.
CREATE TABLE user_consent (
    user_id TEXT NOT NULL PRIMARY KEY,
    version TEXT NOT NULL,
    consented_ts BIGINT NOT NULL
);
