-- The client's User-Agent where each device was last seen (admin whois, the admin API's
-- device list), written with last_seen_ts/ip by the write-behind last-seen tracker.
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;
