"""A COMMIT whose answer is lost with the connection (a PostgreSQL restart at the wrong
moment): the database committed, the server saw an error. Before, the send answered
503 and nothing of the event was announced: no push, no federation sending until the
room's next event. Now the event store asks the database, once it is back, whether
the transaction committed; if it did, the write is a success like any other."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import homeserver.storage.events as events_module
from homeserver.appstate import STORES
from homeserver.storage import PersistItem, Stores
from homeserver.storage.errors import DatabaseUnavailableError
from tests.client.helpers import auth, create_room, deployed, make_user

from .conftest import make_event

ROOM = "!lost:example.org"


def lose_commits(stores: Stores, monkeypatch: pytest.MonkeyPatch, *, committed: bool) -> None:
    """Every event transaction then ends with the error a lost connection gives, after
    committing (`committed`) or after rolling back."""
    original = stores.db.transaction
    write = stores.events._write_requests

    @contextlib.asynccontextmanager
    async def transaction(**options: Any) -> AsyncIterator[Any]:
        lost = False

        async def writing(conn: Any, requests: Any) -> Any:
            nonlocal lost
            lost = True
            return await write(conn, requests)

        monkeypatch.setattr(stores.events, "_write_requests", writing)
        with contextlib.suppress(_RolledBack):
            async with original(**options) as conn:
                yield conn
                if lost and not committed:
                    raise _RolledBack
        if lost:
            raise DatabaseUnavailableError("connection lost at COMMIT")

    monkeypatch.setattr(stores.db, "transaction", transaction)


class _RolledBack(Exception):
    pass


def _message(event_id: str) -> list[PersistItem]:
    return [PersistItem(make_event(event_id, room_id=ROOM, content={"body": "hi"}))]


async def test_a_commit_that_happened_is_a_success(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stores.rooms.store_room(ROOM, "10", "@alice:example.org")
    lose_commits(stores, monkeypatch, committed=True)
    hooked: list[str] = []
    positions = await stores.events.persist_events(
        ROOM, _message("$m1"), in_commit_order=lambda: hooked.append("$m1")
    )
    assert positions == [await stores.events.get_stream_ordering("$m1")]
    assert hooked == ["$m1"]


async def test_a_commit_that_did_not_happen_is_the_error(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stores.rooms.store_room(ROOM, "10", "@alice:example.org")
    lose_commits(stores, monkeypatch, committed=False)
    with pytest.raises(DatabaseUnavailableError):
        await stores.events.persist_events(ROOM, _message("$m2"))
    assert await stores.events.get_stream_ordering("$m2") is None


async def test_a_connection_lost_before_the_commit_is_the_error(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut mid-transaction (a PostgreSQL restart during an insert): nothing to check,
    the error is the answer (a CI run found this path raising a ValueError: a 500)."""
    await stores.rooms.store_room(ROOM, "10", "@alice:example.org")

    async def cut(conn: Any, requests: Any) -> Any:
        raise DatabaseUnavailableError("connection was closed in the middle of operation")

    monkeypatch.setattr(stores.events, "_write_requests", cut)
    with pytest.raises(DatabaseUnavailableError):
        await stores.events.persist_events(ROOM, _message("$m5"))
    with pytest.raises(DatabaseUnavailableError):
        await stores.events.persist_events(ROOM, _message("$m6"), grouped=True)
    assert await stores.events.get_stream_ordering("$m5") is None


async def test_the_outcome_is_read_once_the_database_is_back(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stores.rooms.store_room(ROOM, "10", "@alice:example.org")
    lose_commits(stores, monkeypatch, committed=True)
    fetchval, refused = stores.db.fetchval, [3]

    async def restarting(sql: str, *args: Any) -> Any:
        if refused[0]:
            refused[0] -= 1
            raise DatabaseUnavailableError("the database system is starting up")
        return await fetchval(sql, *args)

    monkeypatch.setattr(stores.db, "fetchval", restarting)
    assert await stores.events.persist_events(ROOM, _message("$m3"))
    assert refused == [0]
    monkeypatch.setattr(events_module, "COMMIT_CHECK_S", 0.0)  # and gives up when it must
    refused[0] = 10
    with pytest.raises(DatabaseUnavailableError):
        await stores.events.persist_events(ROOM, _message("$m4"))


async def test_a_message_whose_commit_answer_was_lost_reaches_the_room(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user sees it: the send answers 200 and the other member's /sync has it."""
    if deployed(app_client):
        pytest.skip("patches the server's database object")
    _, alice, _ = await make_user(app_client, "alice")
    _, bob, _ = await make_user(app_client, "bob")
    room = await create_room(app_client, alice, preset="public_chat")
    joined = await app_client.post(f"/_matrix/client/v3/join/{room}", headers=auth(bob))
    assert joined.status == 200
    synced = await app_client.get("/_matrix/client/v3/sync", headers=auth(bob))
    since = (await synced.json())["next_batch"]
    lose_commits(app_client.server.app[STORES], monkeypatch, committed=True)
    sent = await app_client.put(
        f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "through a restart"},
        headers=auth(alice),
    )
    assert sent.status == 200, await sent.text()
    event_id = (await sent.json())["event_id"]
    synced = await app_client.get(
        f"/_matrix/client/v3/sync?since={since}&timeout=5000", headers=auth(bob)
    )
    timeline = (await synced.json())["rooms"]["join"][room]["timeline"]["events"]
    assert [(e["event_id"], e["content"]["body"]) for e in timeline] == [
        (event_id, "through a restart")
    ]
