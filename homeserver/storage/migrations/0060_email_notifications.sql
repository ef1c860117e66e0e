-- How far each email pusher has been mailed about (homeserver/push/email_notifier.py):
-- the highest stream position considered, and when the last mail went out (one mail
-- per user per notif_delay at most).
CREATE TABLE email_pusher_progress (
    user_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    last_sent_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, pushkey)
);
