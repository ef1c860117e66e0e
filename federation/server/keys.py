"""The key server: `/_matrix/key/v2/server` (our keys) and `/_matrix/key/v2/query`
(acting as a notary for other servers' keys).

Peers fetch `/server` to verify our events and X-Matrix request signatures; the
document is signed with every current key and valid for `key_refresh_interval`.

As a notary (spec "Querying Keys Through Another Server") we answer with the key
documents our keyring verified, each as its origin signed it plus our signature, and
our own document when asked about ourselves. Servers we cannot reach and know nothing
about are left out of the answer, as the spec says. Both endpoints are unauthenticated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from federation.appkeys import KEYRING, SERVER_KEYS
from homeserver.appstate import Mounts
from homeserver.errors import MatrixError
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import is_valid_server_name

# One query may name at most this many servers; only the first few of them may make
# us fetch from the origin (the others are answered from what we hold): an anonymous
# request must not start a hundred outbound fetches.
MAX_SERVERS_PER_QUERY = 100
MAX_FETCHES_PER_QUERY = 5


async def get_server_keys(request: web.Request) -> web.Response:
    document = request.config_dict[SERVER_KEYS].key_document()
    return json_response(document)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _timestamp(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise MatrixError(400, "M_INVALID_PARAM", f"{what} must be a non-negative integer")
    return value


async def _documents_for(
    request: web.Request,
    server_name: str,
    key_ids: list[str],
    minimum_valid_until_ts: int,
    may_fetch: bool = True,
) -> list[dict[str, Any]]:
    """The signed key documents we can vouch for about `server_name`."""
    keys = request.config_dict[SERVER_KEYS]
    if server_name == keys.server_name:
        return [keys.key_document()]
    if not is_valid_server_name(server_name):
        return []
    keyring = request.config_dict[KEYRING]
    docs = await keyring.documents_for_notary(
        server_name, key_ids, minimum_valid_until_ts, may_fetch=may_fetch
    )
    return [keys.sign(doc) for doc in docs]


async def _answer(request: web.Request, criteria: dict[str, tuple[list[str], int]]) -> web.Response:
    results = await asyncio.gather(
        *(
            _documents_for(request, name, ids, ts, may_fetch=i < MAX_FETCHES_PER_QUERY)
            for i, (name, (ids, ts)) in enumerate(criteria.items())
        )
    )
    return json_response({"server_keys": [doc for docs in results for doc in docs]})


async def query_one_server(request: web.Request) -> web.Response:
    """GET /_matrix/key/v2/query/{serverName}[?minimum_valid_until_ts=]."""
    server_name = path_param(request, "server_name")
    raw_ts = request.query.get("minimum_valid_until_ts")
    if raw_ts is None:
        minimum = _now_ms()
    else:
        try:
            minimum = _timestamp(int(raw_ts), "minimum_valid_until_ts")
        except ValueError:
            raise MatrixError(
                400, "M_INVALID_PARAM", "minimum_valid_until_ts must be an integer"
            ) from None
    key_id = request.match_info.get("key_id")
    return await _answer(request, {server_name: ([key_id] if key_id else [], minimum)})


def _parse_bulk_criteria(body: dict[str, Any]) -> dict[str, tuple[list[str], int]]:
    """`{"server_keys": {server: {key_id: {"minimum_valid_until_ts": n}}}}` ->
    {server: (key IDs, the largest minimum asked for, or now)}."""
    servers = body.get("server_keys")
    if not isinstance(servers, dict):
        raise MatrixError(400, "M_BAD_JSON", "server_keys must be an object")
    if len(servers) > MAX_SERVERS_PER_QUERY:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"At most {MAX_SERVERS_PER_QUERY} servers per query"
        )
    now = _now_ms()
    out: dict[str, tuple[list[str], int]] = {}
    for server_name, key_criteria in servers.items():
        if not isinstance(key_criteria, dict):
            raise MatrixError(400, "M_BAD_JSON", "Each server's criteria must be an object")
        minimums = []
        for key_id, criteria in key_criteria.items():
            if not isinstance(criteria, dict):
                raise MatrixError(400, "M_BAD_JSON", f"Criteria for {key_id} must be an object")
            raw = criteria.get("minimum_valid_until_ts")
            minimums.append(now if raw is None else _timestamp(raw, "minimum_valid_until_ts"))
        out[server_name] = (list(key_criteria), max(minimums, default=now))
    return out


async def query_servers(request: web.Request) -> web.Response:
    """POST /_matrix/key/v2/query: the batch form of the notary query."""
    body = await read_json_body(request)
    return await _answer(request, _parse_bulk_criteria(body))


def setup(mounts: Mounts) -> None:
    mounts.key.router.add_get("/v2/server", get_server_keys)
    # Deprecated form with a key ID; the spec says servers return all keys anyway.
    mounts.key.router.add_get("/v2/server/{key_id}", get_server_keys)
    mounts.key.router.add_get("/v2/query/{server_name}", query_one_server)
    # Deprecated form naming one key ID (still sent by older servers and test suites):
    # answered like the bare form, for that key.
    mounts.key.router.add_get("/v2/query/{server_name}/{key_id}", query_one_server)
    mounts.key.router.add_post("/v2/query", query_servers)
