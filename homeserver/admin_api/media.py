"""Synapse's media admin API (/_synapse/admin/v1/media..., users/{id}/media,
purge_media_cache): thin handlers over homeserver.media.admin.MediaAdmin."""

from __future__ import annotations

from aiohttp import web

from homeserver.admin.paging import Page, page_json
from homeserver.admin_api.common import (
    bool_param,
    choice_param,
    direction_param,
    int_param,
    page_params,
    require_admin,
    required_int,
    user_id_path,
)
from homeserver.appstate import MEDIA_ADMIN
from homeserver.errors import invalid_param
from homeserver.http import json_response, path_param
from homeserver.storage.media import LOCAL_ORDER_COLUMNS


def _ref(request: web.Request) -> tuple[str, str]:
    return str(path_param(request, "server_name")), str(path_param(request, "media_id"))


async def media_info(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[MEDIA_ADMIN].info(*_ref(request)))


async def quarantine(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    await request.config_dict[MEDIA_ADMIN].quarantine(*_ref(request), admin.user_id)
    return json_response({})


async def unquarantine(request: web.Request) -> web.Response:
    await require_admin(request)
    await request.config_dict[MEDIA_ADMIN].quarantine(*_ref(request), None)
    return json_response({})


async def quarantine_user_media(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    count = await request.config_dict[MEDIA_ADMIN].quarantine_user_media(
        user_id_path(request), admin.user_id
    )
    return json_response({"num_quarantined": count})


async def protect(request: web.Request) -> web.Response:
    await require_admin(request)
    media_admin = request.config_dict[MEDIA_ADMIN]
    await media_admin.protect(str(path_param(request, "media_id")), True)
    return json_response({})


async def unprotect(request: web.Request) -> web.Response:
    await require_admin(request)
    media_admin = request.config_dict[MEDIA_ADMIN]
    await media_admin.protect(str(path_param(request, "media_id")), False)
    return json_response({})


async def delete_one(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[MEDIA_ADMIN].delete(*_ref(request)))


async def delete_before(request: web.Request) -> web.Response:
    await require_admin(request)
    media_admin = request.config_dict[MEDIA_ADMIN]
    server_name = request.match_info.get("server_name")
    if server_name is not None and server_name != media_admin.server_name:
        raise invalid_param("Can only delete local media")
    result = await media_admin.delete_before(
        required_int(request, "before_ts"),
        int_param(request, "size_gt", 0) or 0,
        bool_param(request, "keep_profiles", True) is not False,
    )
    return json_response(result)


async def purge_media_cache(request: web.Request) -> web.Response:
    await require_admin(request)
    before_ts = required_int(request, "before_ts")
    return json_response(await request.config_dict[MEDIA_ADMIN].purge_remote_cache(before_ts))


async def list_user_media(request: web.Request) -> web.Response:
    await require_admin(request)
    page: Page = page_params(request)
    order_by = choice_param(request, "order_by", LOCAL_ORDER_COLUMNS, "created_ts") or "created_ts"
    media, total = await request.config_dict[MEDIA_ADMIN].user_media(
        user_id_path(request), page.start, page.limit, order_by, direction_param(request) == "b"
    )
    return json_response(page_json({"media": media, "total": total}, page, len(media), total))


async def delete_user_media(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(
        await request.config_dict[MEDIA_ADMIN].delete_user_media(user_id_path(request))
    )


def add_routes(admin: web.Application) -> None:
    r = admin.router
    r.add_get("/v1/media/{server_name}/{media_id}", media_info)
    r.add_delete("/v1/media/{server_name}/{media_id}", delete_one)
    r.add_post("/v1/media/quarantine/{server_name}/{media_id}", quarantine)
    r.add_post("/v1/media/unquarantine/{server_name}/{media_id}", unquarantine)
    r.add_post("/v1/media/protect/{media_id}", protect)
    r.add_post("/v1/media/unprotect/{media_id}", unprotect)
    r.add_post("/v1/media/delete", delete_before)
    r.add_post("/v1/media/{server_name}/delete", delete_before)
    r.add_post("/v1/user/{user_id}/media/quarantine", quarantine_user_media)
    r.add_post("/v1/purge_media_cache", purge_media_cache)
    r.add_get("/v1/users/{user_id}/media", list_user_media)
    r.add_delete("/v1/users/{user_id}/media", delete_user_media)
