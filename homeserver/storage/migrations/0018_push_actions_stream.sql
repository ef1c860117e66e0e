-- Pusher workers read the notifying actions recorded after their last position, for
-- every user at once (replication/pushers.py): a range over stream orderings.
CREATE INDEX event_push_actions_stream ON event_push_actions (stream_ordering);

-- How far a background worker has handled a stream (a pusher worker: the push actions
-- it handed to delivery), so a restarted worker catches up on what it missed.
CREATE TABLE worker_positions (
    instance TEXT NOT NULL,
    stream TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (instance, stream)
);
