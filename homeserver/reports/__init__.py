"""Content reports: users flag events, rooms and users for the server's admins."""
