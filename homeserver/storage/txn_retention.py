"""Transaction IDs are kept a day, not forever.

Three tables remember a request's transaction ID so that a retry is answered, not done
twice: client_txns (PUT /rooms/{room}/send and /state: a row per message a client
sends), to_device_txns (PUT /sendToDevice) and federation_inbound_txns (PUT
/_matrix/federation/v1/send, with the whole response). Kept forever they grow with
every request, and client_txns is also read by /sync for `unsigned.transaction_id`
(a lookup that walks the device's rows). A retry comes seconds or minutes after the
first try; Synapse forgets these after a day as well. After that, a sent event has no
`transaction_id` in a later /sync of its sender, and a retry is treated as new (a
federation transaction's events are deduplicated by event ID anyway).

Deleted in batches of BATCH_ROWS, each its own short transaction (a first run on a
server that kept everything does not hold the write lock for long), on one process.
"""

from __future__ import annotations

import asyncio
import logging

from ._util import now_ms
from .database import Database

log = logging.getLogger(__name__)

TXN_RETENTION_MS = 24 * 3600 * 1000
BATCH_ROWS = 5_000
RUN_INTERVAL_S = 600.0

# table -> (its age column, its primary key): fixed names, never input.
TABLES: dict[str, tuple[str, str]] = {
    "client_txns": ("created_ts", "user_id, device_id, txn_id"),
    "to_device_txns": ("created_ts", "user_id, device_id, txn_id"),
    "federation_inbound_txns": ("received_ts", "origin, txn_id"),
}


class TransactionIdRetention:
    def __init__(
        self, db: Database, *, batch_rows: int = BATCH_ROWS, pause_s: float = 0.05
    ) -> None:
        self.db = db
        self._batch_rows = batch_rows
        self._pause_s = pause_s

    async def run(self, now: int | None = None) -> dict[str, int]:
        """Delete the transaction IDs older than TXN_RETENTION_MS: rows per table."""
        cutoff = (now_ms() if now is None else now) - TXN_RETENTION_MS
        deleted = {}
        for table, (age, key) in TABLES.items():
            deleted[table] = 0
            while True:
                count = await self.db.execute(
                    f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table}"
                    f" WHERE {age} < $1 LIMIT $2)",
                    cutoff,
                    self._batch_rows,
                )
                deleted[table] += count
                if count < self._batch_rows:
                    break
                await asyncio.sleep(self._pause_s)
        if any(deleted.values()):
            log.info("transaction IDs older than a day deleted: %s", deleted)
        return deleted
