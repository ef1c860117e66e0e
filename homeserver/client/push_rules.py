"""Push rules API: /pushrules/ (all rulesets), /pushrules/global/{kind}/{ruleId}
(get, add/change with before/after, delete) and its /enabled and /actions."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import PUSH_RULES, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import bad_json, missing_param
from homeserver.http import json_response, path_param, query_param, read_json_body

PREFIXES = ("/v3", "/r0")
MAX_ID = 255


def _short(value: str) -> str:
    if len(value) > MAX_ID * 4:
        raise ValueError("too long")
    return value


async def get_all(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    ruleset = await request.config_dict[PUSH_RULES].get_ruleset(requester.user_id)
    return json_response({"global": ruleset.to_json()})


async def get_global(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    ruleset = await request.config_dict[PUSH_RULES].get_ruleset(requester.user_id)
    return json_response(ruleset.to_json())


def _ids(request: web.Request) -> tuple[str, str]:
    return path_param(request, "kind", _short), path_param(request, "rule_id", _short)


async def get_rule(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    rule = await request.config_dict[PUSH_RULES].get_rule(requester.user_id, kind, rule_id)
    return json_response(rule.to_json())


async def put_rule(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    before = query_param(request, "before", _short)
    after = query_param(request, "after", _short)
    body = await read_json_body(request)
    await request.config_dict[PUSH_RULES].put_rule(
        requester.user_id, kind, rule_id, body, before=before, after=after
    )
    return json_response({})


async def delete_rule(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    await request.config_dict[PUSH_RULES].delete_rule(requester.user_id, kind, rule_id)
    return json_response({})


async def get_enabled(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    rule = await request.config_dict[PUSH_RULES].get_rule(requester.user_id, kind, rule_id)
    return json_response({"enabled": rule.enabled})


async def put_enabled(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    body = await read_json_body(request)
    if "enabled" not in body:
        raise missing_param("Missing 'enabled'")
    if not isinstance(body["enabled"], bool):
        raise bad_json("'enabled' must be a boolean")
    await request.config_dict[PUSH_RULES].set_enabled(
        requester.user_id, kind, rule_id, body["enabled"]
    )
    return json_response({})


async def get_actions(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    rule = await request.config_dict[PUSH_RULES].get_rule(requester.user_id, kind, rule_id)
    return json_response({"actions": list(rule.actions)})


async def put_actions(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    kind, rule_id = _ids(request)
    body = await read_json_body(request)
    if "actions" not in body:
        raise missing_param("Missing 'actions'")
    await request.config_dict[PUSH_RULES].set_actions(
        requester.user_id, kind, rule_id, body["actions"]
    )
    return json_response({})


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    for prefix in PREFIXES:
        base = f"{prefix}/pushrules"
        router.add_get(f"{base}/", get_all)
        router.add_get(base, get_all)
        router.add_get(f"{base}/global/", get_global)
        router.add_get(f"{base}/global", get_global)
        rule = f"{base}/global/{{kind}}/{{rule_id}}"
        router.add_get(rule, get_rule)
        router.add_put(rule, put_rule)
        router.add_delete(rule, delete_rule)
        router.add_get(f"{rule}/enabled", get_enabled)
        router.add_put(f"{rule}/enabled", put_enabled)
        router.add_get(f"{rule}/actions", get_actions)
        router.add_put(f"{rule}/actions", put_actions)
