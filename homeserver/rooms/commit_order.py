"""Announce persisted events in the order they were committed.

Why this exists: stream orderings are handed out inside the (serialised) write
transaction, so commit order is stream order. But what happens after a commit (applying
a redaction to its target, telling listeners) may await the database, so two
transactions in different rooms can finish their after-commit work in the opposite
order. A long-poll woken by the later event would then be answered with a `next_batch`
past the earlier event, which the in-memory activity window and the notifier had not
heard of yet: the earlier event was never delivered (seen with redactions racing
messages in other rooms; see tests/client/test_sync_consistency.py).

`CommitOrder.enter()` is called while the write lock is held (from the store's
`in_commit_order` hook), so turns are taken in commit order. Each writer then awaits
`turn.ready()` (every earlier turn finished), does its announcements, and calls
`turn.finish()`, which must happen on every path, errors and cancellation included,
or later writers would wait forever. Nothing done while holding a turn may wait for a
later commit (listeners are synchronous; redaction work only reads and writes the
database).
"""

from __future__ import annotations

import asyncio


class Turn:
    """One committed write's place in the announcement queue."""

    __slots__ = ("_previous", "_done")

    def __init__(self, previous: asyncio.Future[None] | None, done: asyncio.Future[None]):
        self._previous = previous
        self._done = done

    async def ready(self) -> None:
        """Wait until every earlier turn has finished."""
        if self._previous is not None and not self._previous.done():
            await asyncio.shield(self._previous)

    def finish(self) -> None:
        """Let the next turn go once every earlier one has (idempotent). A writer that
        fails before `ready()` must not let later turns overtake earlier ones."""
        if self._previous is None or self._previous.done():
            self._release()
        else:
            self._previous.add_done_callback(lambda _: self._release())

    def _release(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


class CommitOrder:
    """A FIFO of turns, one per commit; O(1) per turn, nothing kept once finished."""

    def __init__(self) -> None:
        self._tail: asyncio.Future[None] | None = None

    def enter(self) -> Turn:
        """Take the next turn; call only while holding the database write lock."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous, self._tail = self._tail, done
        return Turn(previous, done)
