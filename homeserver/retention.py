"""The periodic deletion of what a server keeps for a while only, started once, on the
main process (workers never run it: one process deletes, every process reads).

- push actions: folded into unread summaries after a day, highlights after 30 days
  (storage/push_retention.py);
- transaction IDs of client sends, /sendToDevice and inbound federation transactions,
  after a day (storage/txn_retention.py);
- what redacted events said, after redaction_retention_period (7 days by default;
  storage/redaction_retention.py).

Rooms' message retention policies (MSC1763, Synapse's `retention:` section) are purged
by homeserver/retention_purge.py, started from composition next to the room purger it
uses, under the same rule: the main process only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeserver.background import BackgroundTasks, every
from homeserver.storage.database import Database
from homeserver.storage.push_retention import RUN_INTERVAL_S as PUSH_INTERVAL_S
from homeserver.storage.push_retention import PushActionRetention
from homeserver.storage.redaction_retention import RUN_INTERVAL_S as REDACTION_INTERVAL_S
from homeserver.storage.redaction_retention import RedactionRetention
from homeserver.storage.txn_retention import RUN_INTERVAL_S as TXN_INTERVAL_S
from homeserver.storage.txn_retention import TransactionIdRetention


def start_retention(
    database: Database,
    tasks: BackgroundTasks,
    redaction_period_ms: int | None = None,
    forget_events: Callable[[Iterable[str]], None] | None = None,
) -> None:
    """Spawn the retention runs (each: first after its interval, then every interval)."""
    if redaction_period_ms is not None:
        redacted = RedactionRetention(database, redaction_period_ms, forget_events)
        tasks.spawn(every(REDACTION_INTERVAL_S, redacted.run), "redaction retention")
    push = PushActionRetention(database)
    tasks.spawn(every(PUSH_INTERVAL_S, push.run), "push action retention")
    txn = TransactionIdRetention(database)
    tasks.spawn(every(TXN_INTERVAL_S, txn.run), "transaction ID retention")
