"""m.push_rules in /sync: initial sync carries the user's rules as global account data;
an incremental sync carries them again after a change (and only then)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, eventually, make_user, quiet_since

V3 = "/_matrix/client/v3"


def _push_rules(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in body["account_data"]["events"] if e["type"] == "m.push_rules"]


async def _sync(client: TestClient, token: str, **params: str) -> dict[str, Any]:
    r = await client.get(f"{V3}/sync", params={"timeout": "0", **params}, headers=auth(token))
    assert r.status == 200, await r.text()
    return await r.json()


async def _changed_since(client: TestClient, token: str, since: str) -> dict[str, Any]:
    """An incremental sync that has the rules again (a deployment's client reader hears
    of the main's write a moment after its 200, as Synapse's workers do)."""
    return await eventually(
        client, lambda: _sync(client, token, since=since), lambda body: bool(_push_rules(body))
    )


async def test_initial_sync_carries_push_rules(app_client: TestClient) -> None:
    user, token, _ = await make_user(app_client, "alice")
    body = await _sync(app_client, token)
    (event,) = _push_rules(body)
    rules = event["content"]["global"]
    assert set(rules) >= {"override", "content", "room", "sender", "underride"}
    override_ids = [r["rule_id"] for r in rules["override"]]
    assert ".m.rule.master" in override_ids and ".m.rule.suppress_notices" in override_ids
    assert ".m.rule.is_user_mention" in override_ids
    # Same as GET /pushrules/.
    direct = await (await app_client.get(f"{V3}/pushrules/", headers=auth(token))).json()
    assert event["content"] == direct
    # Nothing changed: an incremental sync does not repeat them.
    again = await _sync(app_client, token, since=body["next_batch"])
    assert _push_rules(again) == []


async def test_incremental_sync_after_a_rule_change(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    first = await _sync(app_client, token)
    rule = {"actions": ["notify"], "pattern": "cake*"}
    r = await app_client.put(f"{V3}/pushrules/global/content/cake", json=rule, headers=auth(token))
    assert r.status == 200
    body = await _changed_since(app_client, token, first["next_batch"])
    (event,) = _push_rules(body)
    content_rules = event["content"]["global"]["content"]
    assert content_rules[0] == {
        "rule_id": "cake",
        "pattern": "cake*",
        "actions": ["notify"],
        "default": False,
        "enabled": True,
    }
    # Disabling a default rule shows too.
    r = await app_client.put(
        f"{V3}/pushrules/global/override/.m.rule.suppress_notices/enabled",
        json={"enabled": False},
        headers=auth(token),
    )
    assert r.status == 200
    body2 = await _changed_since(app_client, token, body["next_batch"])
    (event,) = _push_rules(body2)
    suppress = next(
        x
        for x in event["content"]["global"]["override"]
        if x["rule_id"] == ".m.rule.suppress_notices"
    )
    assert suppress["enabled"] is False


async def test_rule_change_wakes_a_long_poll(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    since = await quiet_since(app_client, token)
    poll = asyncio.create_task(
        app_client.get(
            f"{V3}/sync",
            params={"since": since, "timeout": "10000"},
            headers=auth(token),
        )
    )
    await asyncio.sleep(0.2)
    r = await app_client.delete(f"{V3}/pushrules/global/content/nothere", headers=auth(token))
    assert r.status == 404
    rule = {"actions": ["notify"], "pattern": "pie"}
    r = await app_client.put(f"{V3}/pushrules/global/content/pie", json=rule, headers=auth(token))
    assert r.status == 200
    resp = await asyncio.wait_for(poll, 5)
    body = await resp.json()
    (event,) = _push_rules(body)
    assert event["content"]["global"]["content"][0]["rule_id"] == "pie"


async def test_account_data_filter_can_leave_push_rules_out(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    flt = '{"account_data": {"not_types": ["m.push_rules"]}}'
    body = await _sync(app_client, token, filter=flt)
    assert _push_rules(body) == []
