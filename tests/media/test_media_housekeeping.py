"""Media housekeeping across the processes of a deployment (issue 16), on both backends.

Every process serving media writes its reads' access times behind; only the process
named by `media_instance_running_background_jobs` (the main by default) expires unused
reservations and applies `media_retention`. Two MediaRepository objects on one
database and one media store stand for the main and a media worker.

Before: only the main wrote access times behind, so a file read every minute on a
media worker looked unread to `local_media_lifetime` and was deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from homeserver.background import BackgroundTasks
from homeserver.config import Config
from homeserver.media import repository
from homeserver.media.build import build_media
from homeserver.media.repository import MediaRepository
from homeserver.storage import Database
from homeserver.storage.media import MediaStore
from tests.conftest import make_config
from tests.storage.conftest import db  # noqa: F401  (the fixture, on both backends)

USER = "@alice:test.local"


def as_worker(config: Config, name: str) -> Config:
    workers = dataclasses.replace(config.workers, worker_app="generic_worker", worker_name=name)
    return dataclasses.replace(config, workers=workers)


@pytest.fixture
async def stack() -> AsyncIterator[tuple[AsyncExitStack, BackgroundTasks]]:
    tasks = BackgroundTasks()
    async with AsyncExitStack() as exits:
        exits.push_async_callback(tasks.close)
        yield exits, tasks


async def upload(media: MediaRepository, data: bytes) -> str:
    async def body() -> AsyncIterator[bytes]:
        yield data

    mxc = await media.upload(USER, "text/plain", "f.txt", body(), len(data))
    return mxc.rsplit("/", 1)[1]


async def test_reads_on_a_media_worker_keep_its_media_from_retention(
    db: Database,  # noqa: F811
    tmp_path: Path,
    stack: tuple[AsyncExitStack, BackgroundTasks],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repository, "ACCESS_FLUSH_INTERVAL_S", 0.05)
    main_config = make_config(tmp_path, media_retention={"local_media_lifetime": "1s"})
    exits, tasks = stack
    main, _ = build_media(main_config, db, exits, tasks, None)
    worker, _ = build_media(as_worker(main_config, "media1"), db, exits, tasks, None)
    read_on_worker = await upload(worker, b"read every 100 ms on the worker")
    unread = await upload(worker, b"never read")
    for _ in range(25):  # 2.5 s: past the lifetime, the main's job ran many times
        served = await worker.download("test.local", read_on_worker)
        assert served.path.read_bytes() == b"read every 100 ms on the worker"
        await asyncio.sleep(0.1)
    store = MediaStore(db)
    assert await store.get_local(unread) is None
    assert not (main.files.local(unread)).exists()
    kept = await store.get_local(read_on_worker)
    assert kept is not None and kept.last_access_ts is not None


async def test_the_named_media_worker_runs_the_jobs_and_the_main_does_not(
    db: Database,  # noqa: F811
    tmp_path: Path,
    stack: tuple[AsyncExitStack, BackgroundTasks],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repository, "ACCESS_FLUSH_INTERVAL_S", 0.05)
    config = make_config(tmp_path, unused_expiration_time="200ms")
    workers = dataclasses.replace(config.workers, media_jobs_instance="media1")
    config = dataclasses.replace(config, workers=workers)
    assert not config.workers.runs_media_jobs
    exits, tasks = stack
    main, _ = build_media(config, db, exits, tasks, None)
    mxc, _expires = await main.create(USER)
    media_id = mxc.rsplit("/", 1)[1]
    store = MediaStore(db)
    await asyncio.sleep(0.6)  # expired 400 ms ago; the main's housekeeping ran often
    assert await store.get_local(media_id) is not None
    build_media(as_worker(config, "media1"), db, exits, tasks, None)
    for _ in range(50):
        if await store.get_local(media_id) is None:
            break
        await asyncio.sleep(0.05)
    assert await store.get_local(media_id) is None
