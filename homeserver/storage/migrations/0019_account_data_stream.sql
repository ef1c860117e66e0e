-- Account data positions are allocated in the writing transaction as MAX(stream_id) + 1
-- (storage/account_data.py), so any process of a deployment may write them: an index
-- makes that one lookup.
CREATE INDEX account_data_stream_id ON account_data (stream_id);
