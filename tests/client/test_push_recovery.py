"""Push actions are not lost between an event's commit and its actions' (push/actions.py).

Events commit first and their push rules run a moment later, in another transaction. A
process stopped in between, or a database that fails in between, must not leave
acknowledged messages that never count as unread and never notify: the first is caught
up at the next start, the second retried until the database answers. Both backends; in
process, on the same database across the restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import PUSH_ACTIONS, PUSH_STORE, STORES
from homeserver.config import Config
from homeserver.push import actions as actions_module
from homeserver.storage.errors import DatabaseUnavailableError
from tests import deployment_mode
from tests.client.helpers import auth
from tests.client.test_push_counts import expect_counts, send, two_users

pytestmark = pytest.mark.skipif(
    bool(deployment_mode.MODE), reason="stops and restarts an in-process server"
)


def _never_recorded(generator: Any) -> list[int]:
    """Make `generator` stop before recording anything, as a killed process would (its
    worker task ends); the positions of the events it dropped."""
    dropped: list[int] = []

    async def killed(batch: list[Any], retried: bool = False) -> int:
        dropped.extend(so for _, so in batch)
        raise asyncio.CancelledError  # not an Exception: the task ends, nothing is written

    generator._generate_batch = killed
    return dropped


async def _notifications(client: Any, token: str) -> list[str]:
    r = await client.get("/_matrix/client/v3/notifications", headers=auth(token))
    assert r.status == 200, await r.text()
    return [n["event"]["event_id"] for n in (await r.json())["notifications"]]


async def test_actions_lost_at_a_stop_are_recorded_at_the_next_start(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    config = tmp_config(**database_settings)
    client = await aiohttp_client(create_app(config))
    alice, bob, bob_token, room = await two_users(client, third=False)
    app = client.server.app
    store = app[PUSH_STORE]
    # A first start records where it starts from: nothing before it is evaluated again.
    assert await store.action_progress("main") is not None
    first = await send(client, room, alice, "counted before the stop")
    await expect_counts(client, bob, room, notification_count=1)
    recorded = await store.action_progress("main")
    assert recorded == await app[STORES].events.get_stream_ordering(first)

    dropped = _never_recorded(app[PUSH_ACTIONS])
    lost = [await send(client, room, alice, f"sent, then the process stops {i}") for i in range(3)]
    lost.append(await send(client, room, alice, "bob!", **{"m.mentions": {"user_ids": [bob]}}))
    for _ in range(50):
        if len(dropped) == 4:
            break
        await asyncio.sleep(0.01)
    assert len(dropped) == 4
    assert await _notifications(client, bob_token) == [first]  # the stop lost them
    assert await store.action_progress("main") == recorded
    await client.close()

    client = await aiohttp_client(create_app(config))
    await expect_counts(client, bob, room, notification_count=5, highlight_count=1)
    assert await _notifications(client, bob_token) == [*reversed(lost), first]
    store = client.server.app[PUSH_STORE]
    assert await store.action_progress("main") == max(dropped)
    # Evaluated once: the event that had its actions is not recorded twice, and a
    # further restart finds nothing to do.
    rows = await store.db.fetchval(
        "SELECT COUNT(*) FROM event_push_actions WHERE user_id = $1", bob
    )
    assert rows == 5
    assert await client.server.app[PUSH_ACTIONS].catch_up() == 0


async def test_a_batch_failing_for_want_of_the_database_is_retried(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(actions_module, "RETRY_MIN_S", 0.05)
    config = tmp_config(**database_settings)
    client = await aiohttp_client(create_app(config))
    alice, bob, bob_token, room = await two_users(client, third=False)
    app = client.server.app
    store = app[PUSH_STORE]
    real = store.record_batch
    outage = {"left": 3}  # the failed batch's first attempt and two retries fail

    async def flaky(actions: Any, positions: Any, progress: Any = None, late: bool = False) -> Any:
        if outage["left"] and any(a.event_id == failed for a in actions):
            outage["left"] -= 1
            raise DatabaseUnavailableError("the database is restarting")
        return await real(actions, positions, progress, late)

    monkeypatch.setattr(store, "record_batch", flaky)
    before = await store.action_progress("main")
    failed = ""  # read by flaky() once set
    failed = await send(client, room, alice, "sent while the database blinks")
    failed_at = await app[STORES].events.get_stream_ordering(failed)
    # A later message is counted meanwhile (and cached); progress stays below the
    # failed one, so a stop now would evaluate it again at the next start.
    later = await send(client, room, alice, "after it")
    await expect_counts(client, bob, room, notification_count=1)
    assert outage["left"] < 3
    progress = await store.action_progress("main")
    assert progress is not None and before is not None and before <= progress < failed_at

    # The retry records it; the cached count (which had only the later one) is redone.
    generator = app[PUSH_ACTIONS]
    for _ in range(200):
        if generator._retry is not None and generator._retry.done():
            break
        await asyncio.sleep(0.02)
    assert outage["left"] == 0
    await expect_counts(client, bob, room, notification_count=2)
    assert await _notifications(client, bob_token) == [later, failed]
    await send(client, room, alice, "and the next one moves progress past both")
    await expect_counts(client, bob, room, notification_count=3)
    assert (
        await store.action_progress("main")
        == await app[STORES].events.get_current_stream_position()
    )


async def test_a_catch_up_reads_a_bounded_tail_above_the_fold(
    aiohttp_client: Any, tmp_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """However far behind the recorded progress is (a persister idle while others
    wrote), a start reads only the newest CATCH_UP_LIMIT events after it: where the
    events lost at a stop are. Never at or below the retention's fold position: unread
    actions there are counted by summaries, a row added would count twice."""
    monkeypatch.setattr(actions_module, "CATCH_UP_LIMIT", 4)
    monkeypatch.setattr(actions_module, "CATCH_UP_PAGE", 3)
    client = await aiohttp_client(create_app(tmp_config()))
    alice, bob, _, room = await two_users(client, third=False)
    app = client.server.app
    generator, events, store = app[PUSH_ACTIONS], app[STORES].events, app[PUSH_STORE]
    _never_recorded(generator)
    sent = [await send(client, room, alice, f"m{i}") for i in range(10)]
    positions = [await events.get_stream_ordering(event_id) for event_id in sent]
    reads: list[int] = []
    real = events.read_stream

    async def counted(since: int, upto: int, limit: int, written_by: Any = None) -> Any:
        page = await real(since, upto, limit, written_by)
        reads.extend(so for _, so, _ in page)
        return page

    monkeypatch.setattr(events, "read_stream", counted)
    del generator._generate_batch  # the class's again: evaluation works
    await store.db.execute(
        "INSERT INTO push_fold_position (id, folded_upto) VALUES (1, $1)", positions[-2]
    )
    assert await generator.catch_up() == 1
    assert reads == positions[-1:]
    await store.db.execute("DELETE FROM push_fold_position")
    await store.db.execute("UPDATE worker_positions SET position = 0")  # far behind
    reads.clear()
    assert await generator.catch_up() == 3  # the last was recorded just now
    assert reads == positions[-4:]
    assert await store.positions_with_actions(positions) == set(positions[-4:])
    rows = await store.db.fetchval(
        "SELECT COUNT(*) FROM event_push_actions WHERE user_id = $1", bob
    )
    assert rows == 4


async def test_a_catch_up_evaluates_only_what_this_process_persisted(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    """Each event records the process that persisted it, whose push rules evaluate it: a
    start catches up only its own. Another process's events are evaluated (and pushed)
    by that process, live or at its own start; evaluating them here too raced its live
    batch, and both pushed the notification."""
    config = tmp_config(**database_settings)
    client = await aiohttp_client(create_app(config))
    alice, bob, _, room = await two_users(client, third=False)
    app = client.server.app
    events = app[STORES].events
    dropped = _never_recorded(app[PUSH_ACTIONS])
    mine = await send(client, room, alice, "persisted here, then the process stops")
    events.instance_name = "event_persister9"  # as if that process had persisted these
    theirs = [await send(client, room, alice, f"persisted by another process {i}") for i in (1, 2)]
    events.instance_name = "main"
    for _ in range(50):
        if len(dropped) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(dropped) == 3
    await client.close()

    client = await aiohttp_client(create_app(config))
    app = client.server.app
    store, events = app[PUSH_STORE], app[STORES].events
    await expect_counts(client, bob, room, notification_count=1)
    positions = [await events.get_stream_ordering(e) for e in (mine, *theirs)]
    assert await store.positions_with_actions(positions) == {positions[0]}
