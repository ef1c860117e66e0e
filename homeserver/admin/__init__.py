"""Server administration: the services behind Synapse's admin API (/_synapse/admin).

One module per job: users, rooms (reads and moderation), room shutdown and history
purges (background jobs), room statistics for the room list, server notices,
federation destinations, reports and registration tokens. The HTTP side lives in
homeserver.admin_api; what federation provides comes in through `ports`.
"""
