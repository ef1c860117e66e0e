"""Background tasks that outlive the request that started them, tracked for shutdown.

Every task a service starts outside a request's own await (work finished after the
answer was sent, periodic housekeeping) is started through `BackgroundTasks.spawn`, so
the composition module can stop them all when the server shuts down: nothing runs on a
closed database, and nothing is destroyed pending. A task's failure is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` in the background until it ends or the server stops."""
        if self._closed:
            coro.close()
            raise RuntimeError("the server is shutting down")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a service's own loop task and wait until it has ended (a service's
    stop(): nothing of it runs once this returns)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def every(interval_s: float, job: Callable[[], Awaitable[Any]]) -> None:
    """Run `job` every `interval_s` seconds, forever (errors are logged, not fatal)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except Exception:
            log.exception("periodic job failed")
