-- The process that persisted each event (its worker_name; "main" for one process):
-- the one whose push rules evaluated it, so the only one that catches up its actions
-- after a stop (push/actions.py). NULL for events persisted before this column.
ALTER TABLE events ADD COLUMN instance_name TEXT;
