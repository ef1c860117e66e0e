-- Refresh tokens that expire (Synapse's refresh_token_lifetime) and the end of the
-- whole login session a chain of refreshes belongs to (session_lifetime): carried
-- from each refresh token to its successor. NULL: never.
ALTER TABLE refresh_tokens ADD COLUMN expiry_ts BIGINT;
ALTER TABLE refresh_tokens ADD COLUMN session_expiry_ts BIGINT;
