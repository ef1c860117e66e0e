-- MSC3881 (remote push toggling): a pusher the user switched off (from another session,
-- as Element's session manager does) is kept but gets nothing.
ALTER TABLE pushers ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE;
