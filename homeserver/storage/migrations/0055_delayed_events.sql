-- Delayed events (MSC4140, homeserver/delayed): an event a user scheduled to be sent
-- at send_ts unless they restart its timer (send_ts = now + delay_ms), send it early or
-- cancel it. delay_id is the capability that manages it (unguessable). A row stays
-- after it is finalised (finalised_ts set) so its owner can see what happened: the
-- event sent, or the error that stopped it; those rows are pruned by age and by count
-- per user (storage/delayed_events.py). txn_key is the client's transaction (device and
-- transaction ID): a retried request answers the delay_id it already got.
CREATE TABLE delayed_events (
    delay_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    content TEXT NOT NULL,
    delay_ms BIGINT NOT NULL,
    send_ts BIGINT NOT NULL,
    finalised_ts BIGINT,
    outcome TEXT,
    reason TEXT,
    event_id TEXT,
    error TEXT,
    txn_key TEXT
);
CREATE INDEX delayed_events_due ON delayed_events (send_ts) WHERE finalised_ts IS NULL;
CREATE INDEX delayed_events_user ON delayed_events (user_id, finalised_ts);
CREATE INDEX delayed_events_txn ON delayed_events (user_id, txn_key);
