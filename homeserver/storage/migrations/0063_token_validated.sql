-- When the user last proved who they are with this access token (a completed
-- user-interactive auth; NULL: when it was created, at login). Synapse's
-- ui_auth.session_timeout lets some operations skip UIA within that time of it.
ALTER TABLE access_tokens ADD COLUMN last_validated_ts BIGINT;
