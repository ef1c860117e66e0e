"""Queries about our users and aliases: directory, profile, devices, E2EE keys.

Answers only for local users/aliases (404 otherwise). E2EE keys come from the e2ee
area's store (homeserver/storage/e2ee_keys.py); only signatures the key owner made
are shared with other servers, and `user_signing` keys never leave the server.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.server.auth_middleware import body_of
from federation.server.common import require_dict, stores_of
from homeserver.appstate import CONFIG, DEVICE_LISTS, E2EE_KEY_STORE
from homeserver.e2ee.device_list_edus import (
    public_key_ids,
    with_owner_signatures,
    without_device_name,
)
from homeserver.errors import MatrixError, not_found, unrecognized
from homeserver.http import json_response, path_param, query_param
from homeserver.ids import parse_user_id
from homeserver.storage.e2ee_keys import E2eeKeyStore

SHARED_CROSS_SIGNING = (("master", "master_keys"), ("self_signing", "self_signing_keys"))


def _server_name(request: web.Request) -> str:
    return request.config_dict[CONFIG].server_name


def _local_user(request: web.Request, user_id: Any) -> str:
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
    try:
        parse_user_id(user_id)
    except ValueError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID: {e}") from None
    if user_id.partition(":")[2] != _server_name(request):
        raise MatrixError(400, "M_INVALID_PARAM", "User is not local to this server")
    return user_id


async def query_directory(request: web.Request) -> web.Response:
    alias = query_param(request, "room_alias", required=True)
    if alias.partition(":")[2] != _server_name(request):
        raise not_found("Room alias not found")
    info = await stores_of(request).rooms.get_alias(alias)
    if info is None:
        raise not_found("Room alias not found")
    servers = list(dict.fromkeys([*info.servers, _server_name(request)]))
    hosts = await stores_of(request).current_state.get_joined_hosts(info.room_id)
    servers += sorted(h for h in hosts if h not in servers)
    return json_response({"room_id": info.room_id, "servers": servers})


async def query_profile(request: web.Request) -> web.Response:
    user_id = _local_user(request, query_param(request, "user_id", required=True))
    field = query_param(request, "field")
    if not request.config_dict[CONFIG].federation.allow_profile_lookup_over_federation:
        raise MatrixError(
            403, "M_FORBIDDEN", "Profile lookup over federation is disabled on this server"
        )
    stores = stores_of(request)
    if await stores.accounts.get_user(user_id) is None:
        raise not_found("User not found")
    profile = await stores.accounts.get_profile(user_id)
    body: dict[str, Any] = {}
    if profile is not None:
        body.update(profile.custom or {})
        if profile.displayname is not None:
            body["displayname"] = profile.displayname
        if profile.avatar_url is not None:
            body["avatar_url"] = profile.avatar_url
    if field is not None:
        # An unset field is left out (the spec's 200 answer, as Synapse does); a 404 here
        # makes Synapse log a failed request on every invite of a user without an avatar.
        body = {field: body[field]} if field in body else {}
    return json_response(body)


def _shares_device_names(request: web.Request) -> bool:
    return request.config_dict[CONFIG].federation.allow_device_name_lookup_over_federation


def _keystore(request: web.Request) -> E2eeKeyStore:
    # The app's own store: it caches per-device key counts, so claims must go through it.
    return request.config_dict[E2EE_KEY_STORE]


async def user_devices(request: web.Request) -> web.Response:
    user_id = _local_user(request, path_param(request, "user_id"))
    stores = stores_of(request)
    keystore = _keystore(request)
    devices = await stores.accounts.get_devices(user_id)
    keys = await keystore.get_device_keys_for_user(user_id)
    sigs = await keystore.get_signatures(user_id)
    shared = _shares_device_names(request)
    out = []
    for d in devices:
        entry: dict[str, Any] = {"device_id": d.device_id}
        if d.device_id in keys:
            device_keys = keys[d.device_id] if shared else without_device_name(keys[d.device_id])
            entry["keys"] = with_owner_signatures(device_keys, {d.device_id}, sigs, user_id)
        if d.display_name is not None and shared:
            entry["device_display_name"] = d.display_name
        out.append(entry)
    body: dict[str, Any] = {
        "user_id": user_id,
        # The position of the user's latest change: what the `stream_id` of our last
        # m.device_list_update for them said, so the next update's prev_id chains on.
        "stream_id": await request.config_dict[DEVICE_LISTS].user_position(user_id),
        "devices": out,
    }
    cross = await keystore.get_cross_signing_keys(user_id)
    for key_type, field in SHARED_CROSS_SIGNING:
        if key_type in cross:
            body[field.removesuffix("s")] = with_owner_signatures(
                cross[key_type], public_key_ids(cross[key_type]), sigs, user_id
            )
    return json_response(body)


async def keys_query(request: web.Request) -> web.Response:
    body = require_dict(body_of(request))
    wanted = body.get("device_keys")
    if not isinstance(wanted, dict):
        raise MatrixError(400, "M_BAD_JSON", "device_keys must be an object")
    keystore = _keystore(request)
    shared = _shares_device_names(request)
    device_keys: dict[str, Any] = {}
    cross: dict[str, dict[str, Any]] = {field: {} for _, field in SHARED_CROSS_SIGNING}
    for user_id, device_ids in wanted.items():
        if not isinstance(user_id, str) or user_id.partition(":")[2] != _server_name(request):
            continue
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise MatrixError(400, "M_BAD_JSON", "device lists must be arrays of strings")
        sigs = await keystore.get_signatures(user_id)
        found = await keystore.get_device_keys_for_user(user_id, device_ids or None)
        if not shared:
            found = {d: without_device_name(k) for d, k in found.items()}
        device_keys[user_id] = {
            d: with_owner_signatures(k, {d}, sigs, user_id) for d, k in found.items()
        }
        stored = await keystore.get_cross_signing_keys(user_id)
        for key_type, field in SHARED_CROSS_SIGNING:
            if key_type in stored:
                cross[field][user_id] = with_owner_signatures(
                    stored[key_type], public_key_ids(stored[key_type]), sigs, user_id
                )
    return json_response({"device_keys": device_keys, **cross})


async def keys_claim(request: web.Request) -> web.Response:
    body = require_dict(body_of(request))
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise MatrixError(400, "M_BAD_JSON", "one_time_keys must be an object")
    keystore = _keystore(request)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for user_id, devices in wanted.items():
        if not isinstance(user_id, str) or user_id.partition(":")[2] != _server_name(request):
            continue
        if not isinstance(devices, dict):
            raise MatrixError(400, "M_BAD_JSON", "one_time_keys entries must be objects")
        for device_id, algorithm in devices.items():
            if not isinstance(algorithm, str):
                raise MatrixError(400, "M_BAD_JSON", "algorithm must be a string")
            claimed = await keystore.claim_key(user_id, device_id, algorithm)
            if claimed is not None:
                key_id, key = claimed
                out.setdefault(user_id, {})[device_id] = {key_id: key}
    return json_response({"one_time_keys": out})


async def query_other(request: web.Request) -> web.Response:
    """The spec's generic `/query/{queryType}`: a type we do not know is M_UNRECOGNIZED
    (after authentication, as for every routed federation request)."""
    raise unrecognized(f"Unknown query type {path_param(request, 'query_type')!r}")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/query/directory", query_directory)
    app.router.add_get("/v1/query/profile", query_profile)
    app.router.add_get("/v1/query/{query_type}", query_other)  # after the known types
    app.router.add_get("/v1/user/devices/{user_id}", user_devices)
    app.router.add_post("/v1/user/keys/query", keys_query)
    app.router.add_post("/v1/user/keys/claim", keys_claim)
