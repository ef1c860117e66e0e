"""0013: the full-text index of room events (homeserver/storage/search.py).

`event_search` holds the indexed text of every m.room.message body, room name and
topic; SQLite indexes it with FTS5 (triggers keep the index in step), PostgreSQL with a
generated tsvector and a GIN index. Events stored before this migration are indexed
here (not redacted, not rejected, not outliers), in batches.
"""

from __future__ import annotations

from homeserver.storage._util import load_json
from homeserver.storage.database import Connection
from homeserver.storage.search import index_rows, search_row

BATCH = 5000

_TABLE = """
CREATE TABLE event_search (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    text TEXT NOT NULL,
    room_token TEXT NOT NULL
)"""

_SQLITE = [
    _TABLE,
    "CREATE INDEX event_search_room ON event_search (room_id, stream_ordering)",
    "CREATE VIRTUAL TABLE event_search_fts USING fts5(text, room_token, content='event_search',"
    " content_rowid='stream_ordering', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER event_search_insert AFTER INSERT ON event_search BEGIN"
    " INSERT INTO event_search_fts (rowid, text, room_token)"
    " VALUES (new.stream_ordering, new.text, new.room_token); END",
    "CREATE TRIGGER event_search_delete AFTER DELETE ON event_search BEGIN"
    " INSERT INTO event_search_fts (event_search_fts, rowid, text, room_token)"
    " VALUES ('delete', old.stream_ordering, old.text, old.room_token); END",
]

_POSTGRES = [
    _TABLE.replace(
        "    room_token TEXT NOT NULL\n)",
        "    room_token TEXT NOT NULL,\n"
        "    vector tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED\n)",
    ),
    "CREATE INDEX event_search_room ON event_search (room_id, stream_ordering)",
    "CREATE INDEX event_search_vector ON event_search USING GIN (vector)",
]


async def upgrade(conn: Connection) -> None:
    for statement in _POSTGRES if conn.dialect.name == "postgres" else _SQLITE:
        await conn.execute(statement)
    after = None
    while True:
        rows = await conn.fetch(
            "SELECT stream_ordering, event_id, room_id, sender, type, json FROM events"
            " WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')"
            " AND NOT outlier AND rejected_reason IS NULL AND redacted_because IS NULL"
            + ("" if after is None else " AND stream_ordering > $2")
            + " ORDER BY stream_ordering LIMIT $1",
            *([BATCH] if after is None else [BATCH, after]),
        )
        if not rows:
            return
        found = (
            search_row(int(r[0]), r[1], r[2], r[3], r[4], load_json(r[5]).get("content"))
            for r in rows
        )
        await index_rows(conn, [f for f in found if f is not None])
        after = int(rows[-1][0])
