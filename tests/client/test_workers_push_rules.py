"""Push rules written by the client readers (`stream_writers: {push_rules: [...],
account_data: [...]}`).

The README's seven-process deployment (tests/deployment.py FULL_LAYOUT) whose two
client readers write push rules and account data. What must hold:
- with the main SIGKILLed, a user adds, changes and deletes push rules through nginx
  and through each reader (before, the readers forwarded them to the main and
  answered 502); every reader then serves the same rules, the user's /sync carries
  the new `m.push_rules`, and the room's event persister notifies by the new rules
  (the rulesets cache a reader drops is dropped on every process);
- the three processes changing one user's rules at once: every change lands, and
  the rules every process serves agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.client.test_workers import port_url, register
from tests.deployment import FULL_LAYOUT, Deployment, running
from tests.federation.multiserver import eventually

READERS = ("client_reader1", "client_reader2")
RULES = "/_matrix/client/v3/pushrules/global"
RULES_PER_PROCESS = 6


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(
        Path(tmp_path_factory.mktemp("push-rules")),
        **FULL_LAYOUT,
        overrides={"stream_writers": {"push_rules": list(READERS), "account_data": list(READERS)}},
    ) as d:
        yield d


def _rule_ids(ruleset: dict[str, Any], kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset.get(kind, [])]


def _sync_rules(body: dict[str, Any]) -> dict[str, Any] | None:
    for event in body.get("account_data", {}).get("events", []):
        if event["type"] == "m.push_rules":
            return event["content"]["global"]
    return None


async def test_readers_write_push_rules_while_the_main_is_down(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    alice = await register(session, deployment.url)
    bob = await register(session, deployment.url)
    room = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}))[
        "room_id"
    ]
    await bob.ok("POST", f"/_matrix/client/v3/join/{room}", {})

    async def send(text: str) -> str:
        path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{text}"
        return (await alice.ok("PUT", path, {"msgtype": "m.text", "body": text}))["event_id"]

    async def bob_sees(event_id: str) -> dict[str, Any]:
        """Bob's room once his /sync has `event_id` (its push actions are counted)."""

        async def check() -> dict[str, Any] | None:
            body = await bob.ok("GET", "/_matrix/client/v3/sync?timeout=0")
            joined = body.get("rooms", {}).get("join", {}).get(room, {})
            events = joined.get("timeline", {}).get("events", [])
            return joined if any(e["event_id"] == event_id for e in events) else None

        return await eventually(check)

    counted = await bob_sees(await send("before"))
    assert counted["unread_notifications"]["notification_count"] == 1
    since = (await bob.ok("GET", "/_matrix/client/v3/sync?timeout=0"))["next_batch"]
    reader1, reader2 = (port_url(deployment, r) for r in READERS)
    deployment.kill("main")
    try:
        # Mute the room (an override rule with no actions), through nginx.
        mute = {
            "actions": [],
            "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room}],
        }
        await bob.ok("PUT", f"{RULES}/override/mute", mute)
        # A keyword rule added on one reader and removed on the other; a default
        # rule's actions and enabled flag changed on each.
        await bob.ok(
            "PUT", f"{RULES}/content/gone", {"actions": ["notify"], "pattern": "x"}, base=reader1
        )
        await bob.ok("DELETE", f"{RULES}/content/gone", base=reader2)
        await bob.ok(
            "PUT",
            f"{RULES}/override/.m.rule.suppress_notices/actions",
            {"actions": ["notify"]},
            base=reader1,
        )
        await bob.ok(
            "PUT", f"{RULES}/underride/.m.rule.call/enabled", {"enabled": False}, base=reader2
        )

        async def served_everywhere() -> bool:
            for base in (reader1, reader2):
                ruleset = await bob.ok("GET", f"{RULES}/", base=base)
                override = {r["rule_id"]: r for r in ruleset["override"]}
                underride = {r["rule_id"]: r for r in ruleset["underride"]}
                if not (
                    "mute" in override
                    and override[".m.rule.suppress_notices"]["actions"] == ["notify"]
                    and underride[".m.rule.call"]["enabled"] is False
                    and "gone" not in _rule_ids(ruleset, "content")
                ):
                    return False
            return True

        await eventually(served_everywhere)
        synced = _sync_rules(
            await bob.ok("GET", f"/_matrix/client/v3/sync?since={since}&timeout=0")
        )
        assert synced is not None, "an incremental /sync without the changed m.push_rules"
        assert "mute" in _rule_ids(synced, "override")
        assert "gone" not in _rule_ids(synced, "content")
        # The room's persister evaluates alice's next message by bob's new rules.
        muted = await bob_sees(await send("after"))
        assert muted["unread_notifications"]["notification_count"] == 1
    finally:
        await asyncio.to_thread(deployment.start_process, "main")


async def test_rule_changes_from_every_process_at_once_all_land(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    carol = await register(session, deployment.url)
    writers = [port_url(deployment, "main"), *(port_url(deployment, r) for r in READERS)]

    async def add_rules(p: int) -> None:
        for i in range(RULES_PER_PROCESS):
            body = {"actions": ["notify"], "pattern": f"word{p}x{i}"}
            await carol.ok("PUT", f"{RULES}/content/w{p}x{i}", body, base=writers[p])

    await asyncio.gather(*(add_rules(p) for p in range(len(writers))))
    expected = {f"w{p}x{i}" for p in range(len(writers)) for i in range(RULES_PER_PROCESS)}

    async def agreed() -> bool:
        for base in writers:
            ruleset = await carol.ok("GET", f"{RULES}/", base=base)
            if set(_rule_ids(ruleset, "content")) - {".m.rule.contains_user_name"} != expected:
                return False
        return True

    await eventually(agreed)
    synced = _sync_rules(await carol.ok("GET", "/_matrix/client/v3/sync?timeout=0"))
    assert synced is not None
    assert set(_rule_ids(synced, "content")) - {".m.rule.contains_user_name"} == expected
