"""Group commit: writes that arrive while a transaction runs share the next one.

Why: a transaction's fixed cost (taking the write lock, BEGIN, COMMIT, allocating
stream positions, and one statement per table however many rows it inserts) is most
of what a small write costs. Messages to one room are already batched per room
(rooms.local_events); messages to many rooms, one each, were a transaction each, at
about twice the CPU per event of a burst in one room. Here requests queue while the
previous group commits, and the next group writes them all with one statement per
table. The same queue batches hot lookups (a client transaction ID, asked by every
send): the asks made while one query runs share the next query.

One request's failure must not fail the others (a hostile client's event must not
take other users' messages with it): when a group's transaction fails, its requests
are retried one transaction each, so only the failing one fails. A lost database
connection (DatabaseUnavailableError) fails the whole group at once instead: retrying
each would only wait for the same outage N times.

Bounds: at most `max_group` requests per transaction; the queue holds what callers
submitted and await (each caller holds its room's lock meanwhile, so at most one
request per room is queued).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")


class GroupCommit(Generic[R, T]):
    """Runs `commit(requests) -> results` (one transaction, results in request order)
    for every group of requests submitted while the previous group was committing."""

    def __init__(
        self, commit: Callable[[list[R]], Awaitable[list[T]]], *, max_group: int, name: str
    ) -> None:
        self._commit = commit
        self._max_group = max_group
        self._name = name
        self._queue: list[tuple[R, asyncio.Future[T]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: R) -> T:
        """Commit `request` with whatever else is waiting; its result, or its error."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        return await future

    async def _run(self) -> None:
        try:
            while self._queue:
                group = self._queue[: self._max_group]
                del self._queue[: self._max_group]
                # A caller cancelled before its group started: its request is dropped,
                # as a cancelled write of its own would have been.
                group = [(request, future) for request, future in group if not future.done()]
                if group:
                    await self._commit_group(group)
        finally:
            self._task = None
            for _, future in self._queue:  # only when cancelled (shutdown)
                if not future.done():
                    future.set_exception(RuntimeError("the server is shutting down"))
            self._queue.clear()

    async def _commit_group(self, group: list[tuple[R, asyncio.Future[T]]]) -> None:
        try:
            results = await self._commit([request for request, _ in group])
        except DatabaseUnavailableError as exc:
            _settle(group, exc)
        except Exception as exc:
            if len(group) == 1:
                _settle(group, exc)
                return
            log.info("%s: a group of %d failed (%s); each alone", self._name, len(group), exc)
            for request, future in group:
                try:
                    (result,) = await self._commit([request])
                except Exception as alone:
                    _settle([(request, future)], alone)
                else:
                    if not future.done():
                        future.set_result(result)
        except BaseException:
            _settle(group, RuntimeError("the server is shutting down"))
            raise
        else:
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _settle(group: list[tuple[R, asyncio.Future[T]]], exc: BaseException) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(exc)
