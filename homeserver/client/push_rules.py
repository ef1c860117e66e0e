"""Push rules API: /pushrules/ (all rulesets), /pushrules/global/{kind}/{ruleId}
(get, add/change with before/after, delete) and its /enabled and /actions."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import PUSH_RULES, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import MatrixError, bad_json, missing_param, not_found
from homeserver.http import json_response, path_param, query_param, read_json_body
from homeserver.push.rules import KINDS

PREFIXES = ("/v3", "/r0")
MAX_ID = 255


def _short(value: str) -> str:
    if len(value) > MAX_ID * 4:
        raise ValueError("too long")
    return value


def _unrecognized(message: str = "Unrecognized request") -> MatrixError:
    return MatrixError(400, "M_UNRECOGNIZED", message)


_TRAILING_SLASH = "The path must end with a slash here (e.g. /pushrules/global/)"


async def get_path(request: web.Request) -> web.Response:
    """GET /pushrules/..., read as Synapse reads it: `/pushrules/` is every ruleset,
    `/pushrules/global/` one scope, `/pushrules/global/{kind}/` one kind's rules,
    then a rule and one of its attributes. A missing trailing slash, an unknown scope,
    kind or attribute is 400 M_UNRECOGNIZED; an unknown rule is 404."""
    requester = await get_requester(request)
    parts = request.path.partition("/pushrules")[2].split("/")
    ruleset = await request.config_dict[PUSH_RULES].get_ruleset(requester.user_id)
    if parts == [""]:
        raise _unrecognized(_TRAILING_SLASH)
    parts = parts[1:]
    if parts == [""]:
        return json_response({"global": ruleset.to_json()})
    if parts[0] != "global":
        raise _unrecognized("Unknown push rule scope")
    parts = parts[1:]
    rules = ruleset.to_json()
    if not parts:
        raise _unrecognized(_TRAILING_SLASH)
    if parts == [""]:
        return json_response(rules)
    kind, parts = parts[0], parts[1:]
    if kind not in rules:
        raise _unrecognized("Unknown push rule kind")
    if not parts:
        raise _unrecognized(_TRAILING_SLASH)
    if parts == [""]:
        return json_response(rules[kind])
    rule_id, parts = parts[0], parts[1:]
    rule = next((r for r in rules[kind] if r["rule_id"] == rule_id), None)
    if rule is None:
        raise not_found("The push rule was not found.")
    if not parts or parts == [""]:
        return json_response(rule)
    attr = parts[0]
    if len(parts) > 1 or attr not in rule:
        raise _unrecognized("Unknown push rule attribute")
    return json_response({attr: rule[attr]})


def _ids(request: web.Request) -> tuple[str, str]:
    scope = request.match_info.get("scope", "global")
    if scope != "global":
        raise _unrecognized("Unknown push rule scope")
    kind = path_param(request, "kind", _short)
    if kind not in KINDS:
        raise _unrecognized("Unknown push rule kind")
    return kind, path_param(request, "rule_id", _short)


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


async def put_unknown_attr(request: web.Request) -> web.Response:
    await get_requester(request)
    raise _unrecognized("Unknown push rule attribute")


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    for prefix in PREFIXES:
        base = f"{prefix}/pushrules"
        spec_rule = f"{base}/global/{{kind}}/{{rule_id}}"
        for path in (f"{base}/", f"{base}/global/", spec_rule):
            router.add_get(path, get_path)
        router.add_get(f"{spec_rule}/enabled", get_path)
        router.add_get(f"{spec_rule}/actions", get_path)
        # Everything else under /pushrules (no trailing slash, other scopes or kinds,
        # unknown attributes) is answered as Synapse does: 400 M_UNRECOGNIZED.
        router.add_get(base, get_path)
        router.add_get(f"{base}/{{tail:.*}}", get_path)
        rule = f"{base}/{{scope}}/{{kind}}/{{rule_id}}"
        for path in (spec_rule, rule):
            router.add_put(path, put_rule)
            router.add_delete(path, delete_rule)
            router.add_put(f"{path}/enabled", put_enabled)
            router.add_put(f"{path}/actions", put_actions)
            router.add_put(f"{path}/{{attr}}", put_unknown_attr)
