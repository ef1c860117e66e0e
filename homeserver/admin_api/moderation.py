"""/_synapse/admin endpoints for content reports, registration tokens and server
notices."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.admin.tokens import DEFAULT_LENGTH, check_token_name
from homeserver.appstate import ADMIN_REPORTS, ADMIN_TOKENS, SERVER_NOTICES
from homeserver.client.validate import event_content, optional_str
from homeserver.errors import MatrixError, bad_json, invalid_param
from homeserver.http import json_response, path_param, read_json_body

from .common import (
    body_int,
    body_user_id,
    bool_param,
    direction_param,
    page_params,
    report_id_path,
    require_admin,
    str_param,
)

MAX_TXN_ID = 255

# -- reports ---------------------------------------------------------------------------


async def list_event_reports(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_REPORTS].list_event_reports(
        page_params(request),
        newest_first=direction_param(request, "b") == "b",
        user_id=str_param(request, "user_id", 255),
        room_id=str_param(request, "room_id", 255),
        event_sender=str_param(request, "event_sender_user_id", 255),
    )
    return json_response(body)


async def get_event_report(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_REPORTS].event_report(report_id_path(request))
    return json_response(body)


async def delete_event_report(request: web.Request) -> web.Response:
    await require_admin(request)
    await request.config_dict[ADMIN_REPORTS].delete_event_report(report_id_path(request))
    return json_response({})


async def list_user_reports(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_REPORTS].list_user_reports(
        page_params(request),
        newest_first=direction_param(request, "b") == "b",
        user_id=str_param(request, "user_id", 255),
        target_user_id=str_param(request, "target_user_id", 255),
    )
    return json_response(body)


async def get_user_report(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_REPORTS].user_report(report_id_path(request))
    return json_response(body)


async def delete_user_report(request: web.Request) -> web.Response:
    await require_admin(request)
    await request.config_dict[ADMIN_REPORTS].delete_user_report(report_id_path(request))
    return json_response({})


# -- registration tokens ---------------------------------------------------------------


def _token_path(request: web.Request) -> str:
    return str(path_param(request, "token", check_token_name))


def _token_fields(body: dict[str, Any]) -> dict[str, int | None]:
    """uses_allowed / expiry_time present in `body` (null clears), checked."""
    changes: dict[str, int | None] = {}
    for key in ("uses_allowed", "expiry_time"):
        if key in body:
            changes[key] = body_int(body, key)
    return changes


async def list_tokens(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_TOKENS].list(bool_param(request, "valid"))
    return json_response(body)


async def get_token(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_TOKENS].get(_token_path(request)))


async def new_token(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_body(request, allow_empty=True)
    token = optional_str(body, "token", max_len=64)
    if token is not None:
        check_token_name(token)
    length = body.get("length", DEFAULT_LENGTH)
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 64:
        raise invalid_param("'length' must be an integer between 1 and 64")
    fields = _token_fields(body)
    created = await request.config_dict[ADMIN_TOKENS].create(
        token, length, fields.get("uses_allowed"), fields.get("expiry_time")
    )
    return json_response(created)


async def update_token(request: web.Request) -> web.Response:
    await require_admin(request)
    token = _token_path(request)
    body = await read_json_body(request)
    changes = _token_fields(body)
    return json_response(await request.config_dict[ADMIN_TOKENS].update(token, changes))


async def delete_token(request: web.Request) -> web.Response:
    await require_admin(request)
    await request.config_dict[ADMIN_TOKENS].delete(_token_path(request))
    return json_response({})


# -- server notices --------------------------------------------------------------------


async def _send_notice(request: web.Request, txn_id: str | None) -> web.Response:
    admin = await require_admin(request)
    body = await read_json_body(request)
    user_id = body_user_id(body)
    content = body.get("content")
    if not isinstance(content, dict):
        raise bad_json("'content' must be an object")
    content = event_content(content)
    event_type = optional_str(body, "type", max_len=255) or "m.room.message"
    state_key = optional_str(body, "state_key", max_len=255)
    txn = (admin.user_id, "server_notice", txn_id) if txn_id else None
    event_id = await request.config_dict[SERVER_NOTICES].send(
        user_id, event_type, content, state_key, txn=txn
    )
    return json_response({"event_id": event_id})


async def send_notice(request: web.Request) -> web.Response:
    return await _send_notice(request, None)


async def send_notice_txn(request: web.Request) -> web.Response:
    txn_id = str(path_param(request, "txn_id"))
    if len(txn_id) > MAX_TXN_ID:
        raise MatrixError(400, "M_INVALID_PARAM", "Transaction ID too long")
    return await _send_notice(request, txn_id)


def add_routes(admin: web.Application) -> None:
    r = admin.router
    r.add_get("/v1/event_reports", list_event_reports)
    r.add_get("/v1/event_reports/{report_id}", get_event_report)
    r.add_delete("/v1/event_reports/{report_id}", delete_event_report)
    r.add_get("/v1/user_reports", list_user_reports)
    r.add_get("/v1/user_reports/{report_id}", get_user_report)
    r.add_delete("/v1/user_reports/{report_id}", delete_user_report)
    r.add_get("/v1/registration_tokens", list_tokens)
    r.add_post("/v1/registration_tokens/new", new_token)
    r.add_get("/v1/registration_tokens/{token}", get_token)
    r.add_put("/v1/registration_tokens/{token}", update_token)
    r.add_delete("/v1/registration_tokens/{token}", delete_token)
    r.add_post("/v1/send_server_notice", send_notice)
    r.add_put("/v1/send_server_notice/{txn_id}", send_notice_txn)
