-- Transaction IDs are kept a day (storage/txn_retention.py): the deletion finds the
-- old /sendToDevice ones by age, as it does client_txns' and federation_inbound_txns'.
CREATE INDEX to_device_txns_created ON to_device_txns (created_ts);
