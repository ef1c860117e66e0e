-- Which event each stored m.room.redaction names as its target (`redacts`), so a
-- redaction that arrived before its target can be applied when the target arrives.
-- Written with the redaction in the same transaction (homeserver/storage/events.py).
CREATE TABLE event_redactions (
    event_id TEXT NOT NULL PRIMARY KEY,
    redacts TEXT NOT NULL
);
CREATE INDEX event_redactions_redacts ON event_redactions (redacts);
