"""What a redacted message said is erased from the database after a while.

A redaction hides an event's content from everyone at once (reads prune it), but the
stored JSON kept it: an operator's backup, a database dump or a later bug could still
show the message its sender deleted. Synapse keeps the original for
`redaction_retention_period` (7 days by default: time for moderators to review abuse)
and then overwrites it with the redacted form; so do we. The redacted form keeps the
hashes and signatures, so the event stays valid for other servers (they check the
redacted form, as for any redacted event they are sent).

Each redaction queues its target (events.mark_redacted, table redactions_to_prune);
a run prunes those redacted before the cutoff, BATCH_ROWS per transaction, on one
process. An event purged meanwhile simply leaves the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from homeserver.events import get_room_version
from homeserver.events.redaction import redact

from ._util import dump_json, load_json, now_ms, placeholders
from .database import Database

log = logging.getLogger(__name__)

DEFAULT_PERIOD_MS = 7 * 24 * 3600 * 1000
BATCH_ROWS = 500
RUN_INTERVAL_S = 3600.0


class RedactionRetention:
    def __init__(
        self,
        db: Database,
        period_ms: int,
        forget: Callable[[Iterable[str]], None] | None = None,
        *,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        """`forget(event_ids)`: drop cached copies that still hold the content."""
        self.db = db
        self._period_ms = period_ms
        self._forget = forget
        self._batch_rows = batch_rows

    async def run(self, now: int | None = None) -> int:
        """Prune the events redacted more than the period ago; how many."""
        cutoff = (now_ms() if now is None else now) - self._period_ms
        pruned = 0
        while True:
            done = await self._prune_batch(cutoff)
            pruned += done
            if done < self._batch_rows:
                break
            await asyncio.sleep(0.05)  # let other writers in between batches
        if pruned:
            log.info("erased the content of %d redacted events", pruned)
        return pruned

    async def _prune_batch(self, cutoff: int) -> int:
        async with self.db.transaction() as conn:
            due = [
                r[0]
                for r in await conn.fetch(
                    "SELECT event_id FROM redactions_to_prune WHERE redacted_ts < $1"
                    " ORDER BY redacted_ts LIMIT $2",
                    cutoff,
                    self._batch_rows,
                )
            ]
            if not due:
                return 0
            rows = await conn.fetch(
                "SELECT e.event_id, e.json, r.room_version FROM events e"
                " JOIN rooms r ON r.room_id = e.room_id"
                f" WHERE e.event_id IN ({placeholders(len(due))})",
                *due,
            )
            for event_id, raw, version in rows:
                pdu = load_json(raw)
                pruned = redact(pdu, get_room_version(version))
                if pruned != pdu:
                    await conn.execute(
                        "UPDATE events SET json = $1 WHERE event_id = $2",
                        dump_json(pruned),
                        event_id,
                    )
            await conn.execute(
                f"DELETE FROM redactions_to_prune WHERE event_id IN ({placeholders(len(due))})",
                *due,
            )
        if self._forget is not None:
            self._forget(due)
        return len(due)
