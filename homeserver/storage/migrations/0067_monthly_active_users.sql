-- Monthly active users (Synapse's resource limits; homeserver/accounts/mau.py): one row
-- per user active in the last 30 days, with when they were last counted (refreshed
-- at most hourly) and the appservice whose namespace holds them (those do not count
-- towards max_mau_value). Rows older than 30 days are reaped hourly.
CREATE TABLE monthly_active_users (
    user_id TEXT NOT NULL PRIMARY KEY,
    timestamp BIGINT NOT NULL,
    appservice_id TEXT
);
CREATE INDEX monthly_active_users_timestamp ON monthly_active_users (timestamp);
