-- Redacted events whose stored JSON still holds what they said: after
-- redaction_retention_period (Synapse's, 7 days by default) the JSON is replaced by the
-- redacted form (storage/redaction_retention.py). `redacted_ts`: when the redaction
-- arrived. The events redacted before this migration are queued from when theirs did.
CREATE TABLE redactions_to_prune (
    event_id TEXT NOT NULL PRIMARY KEY,
    redacted_ts BIGINT NOT NULL
);
CREATE INDEX redactions_to_prune_ts ON redactions_to_prune (redacted_ts);
INSERT INTO redactions_to_prune (event_id, redacted_ts)
    SELECT e.event_id, r.received_ts FROM events e JOIN events r ON r.event_id = e.redacted_because;
