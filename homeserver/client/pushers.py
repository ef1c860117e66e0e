"""Pushers API: GET /pushers and POST /pushers/set (delivery to the gateways:
homeserver.push.delivery). Bodies are validated here per pusher.yaml: kind http needs
data.url (an http(s) URL with the notify path); kind email (with `enable_notifs`) needs
one of the user's validated addresses as its pushkey. MSC3881: a
pusher can be switched off and on (`org.matrix.msc3881.enabled`), and says which
session set it up (`org.matrix.msc3881.device_id`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from homeserver.accounts.threepids import canonical_email
from homeserver.appstate import CONFIG, PUSH_STORE, THREEPIDS, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.validate import optional_bool, optional_str, require_str
from homeserver.config import Config
from homeserver.errors import MatrixError, bad_json
from homeserver.http import json_response, read_json_body
from homeserver.storage.push import PushStore, StoredPusher

PREFIXES = ("/v3", "/r0")

MAX_PUSHKEY_BYTES = 512
MAX_APP_ID = 64
MAX_TEXT = 1024
NOTIFY_PATH = "/_matrix/push/v1/notify"
# MSC3881 (remote push toggling), unstable names as Synapse and matrix-js-sdk use them.
ENABLED = "org.matrix.msc3881.enabled"
DEVICE_ID = "org.matrix.msc3881.device_id"


@dataclass(frozen=True)
class PusherRequest:
    app_id: str
    pushkey: str
    append: bool
    pusher: StoredPusher | None  # None: delete


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def parse_pusher_body(body: dict[str, Any], user_id: str, device_id: str | None) -> PusherRequest:
    if "kind" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'kind'")
    kind = body["kind"]
    if kind is not None and not isinstance(kind, str):
        raise bad_json("'kind' must be a string or null")
    app_id = require_str(body, "app_id", max_len=MAX_APP_ID)
    pushkey = require_str(body, "pushkey", max_len=MAX_PUSHKEY_BYTES)
    if len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
        raise _invalid(f"'pushkey' is longer than {MAX_PUSHKEY_BYTES} bytes")
    append = optional_bool(body, "append")
    if kind is None:
        return PusherRequest(app_id, pushkey, append, None)
    if kind not in ("http", "email"):
        raise _invalid(f"Unknown pusher kind {kind[:30]!r}")
    app_display_name = require_str(body, "app_display_name", max_len=MAX_TEXT)
    device_display_name = require_str(body, "device_display_name", max_len=MAX_TEXT)
    lang = require_str(body, "lang", max_len=64)
    profile_tag = optional_str(body, "profile_tag", max_len=MAX_TEXT)
    data = body.get("data")
    if not isinstance(data, dict):
        raise MatrixError(400, "M_MISSING_PARAM", "'data' must be an object")
    if kind == "http":
        _check_gateway_url(data)
    enabled = body.get(ENABLED, True)
    if not isinstance(enabled, bool):
        raise bad_json(f"'{ENABLED}' must be a boolean")
    fmt = data.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise bad_json("'data.format' must be a string")
    pusher = StoredPusher(
        user_id=user_id,
        app_id=app_id,
        pushkey=pushkey,
        kind=kind,
        app_display_name=app_display_name,
        device_display_name=device_display_name,
        profile_tag=profile_tag,
        lang=lang,
        data=data,
        device_id=device_id,
        enabled=enabled,
    )
    return PusherRequest(app_id, pushkey, append, pusher)


def _check_gateway_url(data: dict[str, Any]) -> None:
    url = data.get("url")
    if not isinstance(url, str):
        raise _invalid("'data.url' is required for http pushers")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _invalid("'data.url' must be an http(s) URL")
    if parts.path != NOTIFY_PATH:
        raise _invalid(f"'data.url' must have the path {NOTIFY_PATH}")


async def _check_email_pusher(
    request: web.Request, parsed: PusherRequest, user_id: str
) -> PusherRequest:
    """An email pusher mails one of the user's own validated addresses, on a server
    that sends email notifications (as Synapse: M_THREEPID_NOT_FOUND otherwise). The
    pushkey is kept in the stored (canonical) form of the address."""
    email = request.config_dict[CONFIG].threepids.email
    if email is None or not email.enable_notifs:
        raise _invalid("This server does not send email notifications")
    threepids = request.config_dict[THREEPIDS]
    if await threepids.owner("email", parsed.pushkey) != user_id:
        raise MatrixError(400, "M_THREEPID_NOT_FOUND", "Email not found")
    address = canonical_email(parsed.pushkey)
    assert parsed.pusher is not None
    return replace(parsed, pushkey=address, pusher=replace(parsed.pusher, pushkey=address))


def pusher_json(pusher: StoredPusher) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pushkey": pusher.pushkey,
        "kind": pusher.kind,
        "app_id": pusher.app_id,
        "app_display_name": pusher.app_display_name,
        "device_display_name": pusher.device_display_name,
        "lang": pusher.lang,
        "data": pusher.data,
    }
    if pusher.profile_tag is not None:
        out["profile_tag"] = pusher.profile_tag
    out[ENABLED] = pusher.enabled
    if pusher.device_id is not None:
        out[DEVICE_ID] = pusher.device_id  # the session that set it up (Element shows it)
    return out


async def get_pushers(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    pushers = await request.config_dict[PUSH_STORE].get_pushers(requester.user_id)
    return json_response({"pushers": [pusher_json(p) for p in pushers]})


# Blocked whatever the configuration says: "this host" addresses are never a gateway.
_ALWAYS_BLOCKED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))


def _blocked(config: Config, address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == n.version and ip in n for n in _ALWAYS_BLOCKED):
        return True
    return config.federation.is_ip_blocked(ip)


def check_gateway_address(config: Config, url: str) -> None:
    """Refuse a push gateway on an address the outbound IP policy blocks (the same
    ip_range_blacklist as federation: loopback, private, link-local such as the cloud
    metadata service 169.254.169.254, ...), so a pusher cannot aim the server at its
    own network. IP literals are judged here, and `localhost` names (RFC 6761) are
    loopback. Other names are not resolved now: what a name resolves to can change,
    so delivery checks the address it connects to (the federation client's resolver
    does), and a lookup per request would let any user make us wait on DNS.
    """
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise _invalid("'data.url' points at an address this server may not connect to")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return
    if _blocked(config, host):
        raise _invalid("'data.url' points at an address this server may not connect to")


EMAIL_APP_ID = "m.email"


def email_pusher(user_id: str, address: str) -> StoredPusher:
    """The email pusher a user registering with an address gets (notif_for_new_users),
    as Synapse makes it."""
    return StoredPusher(
        user_id=user_id,
        app_id=EMAIL_APP_ID,
        pushkey=address,
        kind="email",
        app_display_name="Email Notifications",
        device_display_name=address,
        profile_tag=None,
        lang="en",
        data={},
        device_id=None,
    )


async def delete_email_pushers(store: PushStore, user_id: str, address: str) -> None:
    """The address left the account: nothing is mailed to it any more."""
    for pusher in await store.get_pushers(user_id):
        if pusher.kind == "email" and pusher.pushkey == address:
            await store.delete_pusher(user_id, pusher.app_id, pusher.pushkey)


def _canonical_pushkey(parsed: PusherRequest) -> PusherRequest:
    """Deleting an email pusher by the address as the client spells it."""
    try:
        return replace(parsed, pushkey=canonical_email(parsed.pushkey))
    except MatrixError:
        return parsed


async def set_pusher(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    parsed: PusherRequest = parse_pusher_body(body, requester.user_id, requester.device_id)
    if parsed.pusher is not None and parsed.pusher.kind == "email":
        parsed = await _check_email_pusher(request, parsed, requester.user_id)
    elif parsed.pusher is not None:
        check_gateway_address(request.config_dict[CONFIG], parsed.pusher.data["url"])
    elif parsed.app_id == EMAIL_APP_ID:
        parsed = _canonical_pushkey(parsed)
    store = request.config_dict[PUSH_STORE]
    if parsed.pusher is None:
        await store.delete_pusher(requester.user_id, parsed.app_id, parsed.pushkey)
    else:
        await store.set_pusher(parsed.pusher, append=parsed.append)
    return json_response({})


def setup(mounts: Mounts) -> None:
    for prefix in PREFIXES:
        mounts.client.router.add_get(f"{prefix}/pushers", get_pushers)
        mounts.client.router.add_post(f"{prefix}/pushers/set", set_pusher)
