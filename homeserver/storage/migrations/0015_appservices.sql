-- How far each application service has been sent the event stream: after a restart its
-- transactions resume from here, so nothing it should see is lost.
CREATE TABLE appservice_positions (
    service_id TEXT NOT NULL PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
