"""Server-side search (issue 13), on SQLite and PostgreSQL through the client API:
matching (prefixes, stemming, phrases, exclusions, CJK), ordering and paging (every
match once), filters, context, groupings, state; and what must never leak (rooms the
user is not in or left, history before joining a `joined` room, redacted text,
encrypted events)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from tests.client.helpers import auth, register_user
from tests.conftest import make_config
from tests.storage.conftest import drop_postgres_schema, postgres_test_config

C = "/_matrix/client/v3"


@pytest.fixture(params=["sqlite", "postgres"])
async def client(request: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[TestClient]:
    if request.param == "sqlite":
        yield await aiohttp_client(create_app(make_config(tmp_path)))
        return
    db = postgres_test_config()
    if db is None:
        pytest.skip("HS_TEST_POSTGRES_DSN is not set")
    try:
        yield await aiohttp_client(create_app(make_config(tmp_path, database=db)))
    finally:
        await drop_postgres_schema(db)


class User:
    def __init__(self, client: TestClient, data: dict[str, Any]) -> None:
        self.c = client
        self.id = data["user_id"]
        self.h = auth(data["access_token"])

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        resp = await self.c.request(method, C + path, json=body, headers=self.h, params=params)
        data = await resp.json()
        assert resp.status == 200, (path, data)
        return data

    async def room(self, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return (await self.ok("POST", "/createRoom", body))["room_id"]

    async def say(self, room: str, text: str, event_type: str = "m.room.message") -> str:
        content = {"msgtype": "m.text", "body": text}
        path = f"/rooms/{room}/send/{event_type}/{uuid.uuid4().hex}"
        return (await self.ok("PUT", path, content))["event_id"]

    async def search(self, term: str, next_batch: str | None = None, **criteria: Any) -> Any:
        body = {"search_categories": {"room_events": {"search_term": term, **criteria}}}
        params = {"next_batch": next_batch} if next_batch else {}
        data = await self.ok("POST", "/search", body, **params)
        return data["search_categories"]["room_events"]

    async def search_status(self, body: Any, **params: str) -> tuple[int, Any]:
        resp = await self.c.post(f"{C}/search", json=body, headers=self.h, params=params)
        return resp.status, await resp.json()


async def users(client: TestClient, *names: str) -> list[User]:
    return [User(client, await register_user(client, n)) for n in names]


def bodies(result: Any) -> list[str]:
    return [r["result"]["content"]["body"] for r in result["results"]]


async def test_words_prefixes_stems_phrases_and_exclusions(client: TestClient) -> None:
    (alice,) = await users(client, "alice")
    room = await alice.room()
    for text in (
        "Hello world",
        "the searching party searched everywhere",
        "helicopter rides",
        "exact phrase here",
        "phrase exact reversed",
        "spam and eggs",
        "ham and eggs",
    ):
        await alice.say(room, text)
    assert bodies(await alice.search("hello")) == ["Hello world"]
    assert sorted(bodies(await alice.search("hel"))) == ["Hello world", "helicopter rides"]
    assert bodies(await alice.search("searches")) == ["the searching party searched everywhere"]
    assert bodies(await alice.search('"exact phrase"')) == ["exact phrase here"]
    assert bodies(await alice.search("eggs -spam")) == ["ham and eggs"]
    assert sorted(bodies(await alice.search("helicopter OR ham"))) == [
        "ham and eggs",
        "helicopter rides",
    ]
    result = await alice.search("hel", order_by="recent")
    assert set(result["highlights"]) == {"Hello", "helicopter"}
    assert result["count"] == 2
    assert (await alice.search("nothingmatches"))["results"] == []
    assert (await alice.search("   "))["results"] == []


async def test_chinese_japanese_korean_text_is_found(client: TestClient) -> None:
    (alice,) = await users(client, "alice")
    room = await alice.room()
    await alice.say(room, "你好世界")
    await alice.say(room, "今日はいい天気ですね")
    await alice.say(room, "안녕하세요 여러분")
    for term, expected in [
        ("你好", "你好世界"),
        ("世界", "你好世界"),
        ("你好世界", "你好世界"),
        ("好", "你好世界"),
        ("天気", "今日はいい天気ですね"),
        ("안녕", "안녕하세요 여러분"),
    ]:
        result = await alice.search(term)
        assert bodies(result) == [expected], term
    assert (await alice.search("你坏"))["results"] == []
    assert "你好" in (await alice.search("你好"))["highlights"]


async def test_recent_order_pages_return_every_match_once(client: TestClient) -> None:
    alice, bob = await users(client, "alice", "bob")
    rooms = [await alice.room(), await alice.room()]
    for room in rooms:
        await bob.ok("POST", f"/join/{room}", {})
    sent = []
    for i in range(23):
        sender = alice if i % 3 else bob
        sent.append(await sender.say(rooms[i % 2], f"needle number {i}"))
        await alice.say(rooms[i % 2], f"hay {i}")
    seen: list[str] = []
    batch = None
    pages = 0
    while True:
        result = await bob.search("needle", batch, order_by="recent", filter={"limit": 5})
        seen += [r["result"]["event_id"] for r in result["results"]]
        pages += 1
        batch = result.get("next_batch")
        if not batch:
            break
        assert len(result["results"]) == 5
        assert pages < 10
    assert seen == list(reversed(sent))
    assert result["count"] == 23


async def test_rank_order_gives_the_best_first_without_next_batch(client: TestClient) -> None:
    (alice,) = await users(client, "alice")
    room = await alice.room()
    await alice.say(room, "cake is mentioned once among many many other words in this text")
    await alice.say(room, "cake cake cake")
    result = await alice.search("cake", order_by="rank")
    assert bodies(result)[0] == "cake cake cake"
    ranks = [r["rank"] for r in result["results"]]
    assert ranks == sorted(ranks, reverse=True)
    assert "next_batch" not in result


async def test_no_leaks(client: TestClient) -> None:
    alice, bob, eve = await users(client, "alice", "bob", "eve")
    private = await alice.room(preset="private_chat")
    await alice.say(private, "secret plan")
    joined_only = await alice.room()
    await alice.ok(
        "PUT",
        f"/rooms/{joined_only}/state/m.room.history_visibility",
        {"history_visibility": "joined"},
    )
    await alice.say(joined_only, "secret before bob")
    await bob.ok("POST", f"/join/{joined_only}", {})
    await alice.say(joined_only, "secret after bob")
    redacted = await alice.say(joined_only, "secret redacted")
    await alice.ok("PUT", f"/rooms/{joined_only}/redact/{redacted}/{uuid.uuid4().hex}", {})
    await alice.ok(
        "PUT",
        f"/rooms/{joined_only}/send/m.room.encrypted/{uuid.uuid4().hex}",
        {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "body": "secret cipher"},
    )

    assert bodies(await bob.search("secret")) == ["secret after bob"]
    assert (await eve.search("secret"))["results"] == []
    assert sorted(bodies(await alice.search("secret"))) == [
        "secret after bob",
        "secret before bob",
        "secret plan",
    ]
    await bob.ok("POST", f"/rooms/{joined_only}/leave", {})
    assert (await bob.search("secret"))["results"] == []


async def test_filters_keys_and_limits(client: TestClient) -> None:
    alice, bob = await users(client, "alice", "bob")
    first = await alice.room(name="Garden club", topic="roses and tulips")
    second = await alice.room()
    await bob.ok("POST", f"/join/{first}", {})
    await bob.ok("POST", f"/join/{second}", {})
    await alice.say(first, "tulips by alice")
    await bob.say(first, "tulips by bob")
    await alice.say(second, "tulips elsewhere")

    only_first = await bob.search("tulips", filter={"rooms": [first]}, keys=["content.body"])
    assert sorted(bodies(only_first)) == ["tulips by alice", "tulips by bob"]
    by_bob = await bob.search("tulips", filter={"senders": [bob.id]}, keys=["content.body"])
    assert bodies(by_bob) == ["tulips by bob"]
    not_alice = await bob.search(
        "tulips", filter={"not_senders": [alice.id], "types": ["m.room.message"]}
    )
    assert bodies(not_alice) == ["tulips by bob"]
    topics = await bob.search("tulips", keys=["content.topic"])
    assert [r["result"]["type"] for r in topics["results"]] == ["m.room.topic"]
    names = await bob.search("garden", filter={"types": ["m.room.name"]})
    assert [r["result"]["content"]["name"] for r in names["results"]] == ["Garden club"]
    assert len((await bob.search("tulips", filter={"limit": 2}))["results"]) == 2
    everything = await bob.search("tulips")
    assert len(everything["results"]) == 4  # three messages and the topic


async def test_context_groupings_and_state(client: TestClient) -> None:
    alice, bob = await users(client, "alice", "bob")
    await alice.ok("PUT", f"/profile/{alice.id}/displayname", {"displayname": "Alice A"})
    room = await alice.room(name="Chat")
    await bob.ok("POST", f"/join/{room}", {})
    await alice.say(room, "before one")
    await bob.say(room, "before two")
    target = await alice.say(room, "the target line")
    await bob.say(room, "after one")
    result = await bob.search(
        "target",
        event_context={"before_limit": 2, "after_limit": 1, "include_profile": True},
        groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        include_state=True,
    )
    (hit,) = result["results"]
    assert hit["result"]["event_id"] == target
    context = hit["context"]
    assert [e["content"]["body"] for e in context["events_before"]] == ["before two", "before one"]
    assert [e["content"]["body"] for e in context["events_after"]] == ["after one"]
    assert context["start"] and context["end"]
    assert context["profile_info"][alice.id]["displayname"] == "Alice A"
    assert result["groups"]["room_id"][room]["results"] == [target]
    assert result["groups"]["sender"][alice.id]["results"] == [target]
    assert any(e["type"] == "m.room.name" for e in result["state"][room])


@pytest.mark.parametrize(
    ("body", "params", "errcode"),
    [
        ({}, {}, "M_BAD_JSON"),
        ({"search_categories": {"room_events": {}}}, {}, "M_MISSING_PARAM"),
        ({"search_categories": {"room_events": {"search_term": 5}}}, {}, "M_MISSING_PARAM"),
        (
            {"search_categories": {"room_events": {"search_term": "a", "keys": ["content.x"]}}},
            {},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "a", "order_by": "best"}}},
            {},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "a"}}},
            {"next_batch": "x"},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "a", "filter": {"limit": "x"}}}},
            {},
            "M_BAD_JSON",
        ),
    ],
)
async def test_bad_requests_are_400(
    client: TestClient, body: Any, params: dict[str, str], errcode: str
) -> None:
    (alice,) = await users(client, "alice")
    status, data = await alice.search_status(body, **params)
    assert status == 400 and data["errcode"] == errcode, data


async def test_hostile_search_terms_do_not_break_the_query(client: TestClient) -> None:
    (alice,) = await users(client, "alice")
    room = await alice.room()
    await alice.say(room, "normal words")
    for term in [
        '"',
        "AND",
        "NOT",
        "OR OR",
        '"unclosed',
        "*",
        "a:b",
        "'; DROP TABLE events; --",
        "NEAR(a b)",
        "\u0000",
        "-",
        "x" * 5000,
    ]:
        status, data = await alice.search_status(
            {"search_categories": {"room_events": {"search_term": term}}}
        )
        assert status == 200, (term, data)
    assert bodies(await alice.search("normal")) == ["normal words"]
