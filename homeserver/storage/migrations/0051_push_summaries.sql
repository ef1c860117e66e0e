-- Push actions are not kept forever (storage/push_retention.py): once older than a day
-- (highlights: 30 days) their rows are deleted, and the unread ones are first folded
-- into one row per (user, room, thread) here, so unread counts stay exact.
-- upto_so: the newest folded action counted. The counts stand while a read position
-- of the thread is below it, and the whole row is read once one reaches it.
CREATE TABLE push_summaries (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notif_count BIGINT NOT NULL,
    highlight_count BIGINT NOT NULL,
    upto_so BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);

-- How far actions have been folded: every action at or below `folded_upto` is counted
-- in push_summaries, not by its row (a single row, id 1; none before the first fold,
-- so that port-db can copy the row into a freshly migrated target).
CREATE TABLE push_fold_position (
    id INTEGER PRIMARY KEY,
    folded_upto BIGINT NOT NULL
);

-- The newest action position at a time, sampled by each retention run: the position
-- an age corresponds to (actions carry the event's own, untrusted, timestamp).
CREATE TABLE push_fold_marks (
    ts BIGINT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
