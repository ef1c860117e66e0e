-- Remote users' device lists, as their server's GET /user/devices answered them (and
-- kept current by m.device_list_update EDUs). Only for remote users who share a room
-- with one of ours (others send us no updates). `stale`: an update was missed; the
-- next /keys/query resyncs.
CREATE TABLE remote_device_lists (
    user_id TEXT NOT NULL PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    stale BOOLEAN NOT NULL,
    answer TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);
