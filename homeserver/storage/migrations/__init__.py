"""Schema migrations, applied in numeric order by `homeserver.storage.migrate`.

0001 is the core schema; 0002-0020 are reserved for the other areas. Add a file
`NNNN_name.sql` (or `.py` with `async def upgrade(conn)`) and it will be applied.
"""
