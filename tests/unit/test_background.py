"""BackgroundTasks: work that outlives a request is tracked and stopped at shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from homeserver.background import BackgroundTasks


async def test_tasks_are_tracked_until_they_end_and_failures_are_logged(caplog) -> None:
    tasks = BackgroundTasks()
    release = asyncio.Event()

    async def waits() -> str:
        await release.wait()
        return "done"

    async def fails() -> None:
        raise RuntimeError("boom")

    waiting = tasks.spawn(waits(), "waits")
    with caplog.at_level(logging.ERROR, logger="homeserver.background"):
        failing = tasks.spawn(fails(), "fails")
        await asyncio.gather(failing, return_exceptions=True)
        await asyncio.sleep(0)
    assert "background task fails failed" in caplog.text
    assert len(tasks) == 1
    release.set()
    assert await waiting == "done"
    assert len(tasks) == 0


async def test_close_cancels_what_still_runs_and_refuses_new_work() -> None:
    tasks = BackgroundTasks()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = tasks.spawn(forever(), "forever")
    await asyncio.sleep(0)
    await tasks.close()
    assert task.cancelled() and cancelled.is_set()
    assert len(tasks) == 0

    async def late() -> None:
        pass

    with pytest.raises(RuntimeError, match="shutting down"):
        tasks.spawn(late(), "late")
