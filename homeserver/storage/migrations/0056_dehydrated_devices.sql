-- Dehydrated devices (MSC3814, homeserver/e2ee/dehydration.py): at most one per user, a
-- device without an access token whose encrypted state (device_data, opaque to us) a
-- client of the user downloads to decrypt what was sent to it while they were offline.
CREATE TABLE dehydrated_devices (
    user_id TEXT NOT NULL PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);
