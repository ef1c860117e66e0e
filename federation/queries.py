"""Asking other servers about their users and aliases, and to-device relay.

- `FederationQueries`: `query/profile`, `query/directory`, `user/devices`,
  `publicRooms` - what the profile, room-alias, device-list and room-directory code
  needs about remote users, aliases and directories.
- `FederationRemoteKeys`: homeserver.e2ee.ports.RemoteKeys (`user/keys/query`,
  `user/keys/claim`), with the client's timeout passed through.
- `FederationToDevice`: homeserver.e2ee.ports.RemoteToDevice, queued as an
  `m.direct_to_device` EDU in the durable outbox (never waits for the network).

Every answer is checked for shape before it leaves this module, so callers may index it.
"""

from __future__ import annotations

from typing import Any

from federation.client import fed_path
from federation.sender import FederationSender

QUERY_TIMEOUT_S = 30.0
MIN_TIMEOUT_S = 1.0


def _timeout(timeout_ms: int) -> float:
    return max(MIN_TIMEOUT_S, min(QUERY_TIMEOUT_S, timeout_ms / 1000))


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError(f"{what}: the answer is not a JSON object")
    return body


class FederationQueries:
    def __init__(self, client: Any) -> None:
        self._client = client

    async def profile(self, user_id: str, field: str | None = None) -> dict[str, Any]:
        """The remote user's profile (`displayname`, `avatar_url`, ...); FederationError
        (404 M_NOT_FOUND) when the user does not exist."""
        server = user_id.partition(":")[2]
        query = {"user_id": user_id}
        if field is not None:
            query["field"] = field
        body = await self._client.get_json(
            server, "/_matrix/federation/v1/query/profile", query=query, timeout=QUERY_TIMEOUT_S
        )
        body = _object(body, "query/profile")
        return {k: v for k, v in body.items() if isinstance(v, str | None)}

    async def directory(self, room_alias: str) -> tuple[str, list[str]]:
        """(room ID, servers) for an alias on the alias's server."""
        server = room_alias.partition(":")[2]
        body = _object(
            await self._client.get_json(
                server,
                "/_matrix/federation/v1/query/directory",
                query={"room_alias": room_alias},
                timeout=QUERY_TIMEOUT_S,
            ),
            "query/directory",
        )
        room_id = body.get("room_id")
        servers = body.get("servers")
        if not isinstance(room_id, str):
            raise ValueError("query/directory: no room_id")
        if not isinstance(servers, list):
            servers = []
        return room_id, [s for s in servers if isinstance(s, str)]

    async def public_rooms(
        self,
        server: str,
        *,
        limit: int | None = None,
        since: str | None = None,
        search_term: str | None = None,
        room_types: list[str | None] | None = None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
    ) -> dict[str, Any]:
        """The server's published room directory (`/v1/publicRooms`): GET when nothing
        is filtered, POST with a `filter` otherwise. Only the response's documented
        fields are kept, each checked for type (`chunk` entries need a `room_id`)."""
        if search_term is None and room_types is None:
            query: dict[str, str] = {}
            if limit is not None:
                query["limit"] = str(limit)
            if since is not None:
                query["since"] = since
            if include_all_networks:
                query["include_all_networks"] = "true"
            if third_party_instance_id is not None:
                query["third_party_instance_id"] = third_party_instance_id
            answer = await self._client.get_json(
                server,
                "/_matrix/federation/v1/publicRooms",
                query=query,
                timeout=QUERY_TIMEOUT_S,
            )
        else:
            body: dict[str, Any] = {"include_all_networks": include_all_networks}
            for key, value in (
                ("limit", limit),
                ("since", since),
                ("third_party_instance_id", third_party_instance_id),
            ):
                if value is not None:
                    body[key] = value
            filt: dict[str, Any] = {}
            if search_term is not None:
                filt["generic_search_term"] = search_term
            if room_types is not None:
                filt["room_types"] = room_types
            body["filter"] = filt
            answer = await self._client.post_json(
                server, "/_matrix/federation/v1/publicRooms", body, timeout=QUERY_TIMEOUT_S
            )
        return _public_rooms_answer(_object(answer, "publicRooms"))

    async def hierarchy(self, server: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        """GET /hierarchy/{roomId}: `{room, children, inaccessible_children}`."""
        return _object(
            await self._client.get_json(
                server,
                fed_path("/_matrix/federation/v1/hierarchy/{}", room_id),
                query={"suggested_only": "true" if suggested_only else "false"},
                timeout=QUERY_TIMEOUT_S,
            ),
            "hierarchy",
        )

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        """`{user_id, stream_id, devices: [...], master_key?, self_signing_key?}`."""
        server = user_id.partition(":")[2]
        body = _object(
            await self._client.get_json(
                server,
                fed_path("/_matrix/federation/v1/user/devices/{}", user_id),
                timeout=QUERY_TIMEOUT_S,
            ),
            "user/devices",
        )
        if body.get("user_id") != user_id or not isinstance(body.get("devices"), list):
            raise ValueError("user/devices: answer is for another user or has no devices")
        return body


def _public_rooms_answer(body: dict[str, Any]) -> dict[str, Any]:
    chunk = body.get("chunk")
    if not isinstance(chunk, list):
        raise ValueError("publicRooms: no chunk list")
    out: dict[str, Any] = {
        "chunk": [e for e in chunk if isinstance(e, dict) and isinstance(e.get("room_id"), str)]
    }
    for key in ("next_batch", "prev_batch"):
        if isinstance(body.get(key), str):
            out[key] = body[key]
    total = body.get("total_room_count_estimate")
    if isinstance(total, int) and not isinstance(total, bool):
        out["total_room_count_estimate"] = total
    return out


class FederationRemoteKeys:
    """homeserver.e2ee.ports.RemoteKeys over federation."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        return await FederationQueries(self._client).user_devices(user_id)

    async def query(
        self, destination: str, device_keys: dict[str, list[str]], timeout_ms: int
    ) -> dict[str, Any]:
        body = _object(
            await self._client.post_json(
                destination,
                "/_matrix/federation/v1/user/keys/query",
                {"device_keys": device_keys},
                timeout=_timeout(timeout_ms),
            ),
            "user/keys/query",
        )
        out: dict[str, Any] = {}
        for key in ("device_keys", "master_keys", "self_signing_keys"):
            value = body.get(key)
            if isinstance(value, dict):
                # Only users of that server: a peer must not speak for others.
                out[key] = {
                    u: v
                    for u, v in value.items()
                    if isinstance(u, str) and u.partition(":")[2] == destination
                }
        out.setdefault("device_keys", {})
        return out

    async def claim(
        self, destination: str, one_time_keys: dict[str, dict[str, str]], timeout_ms: int
    ) -> dict[str, Any]:
        body = _object(
            await self._client.post_json(
                destination,
                "/_matrix/federation/v1/user/keys/claim",
                {"one_time_keys": one_time_keys},
                timeout=_timeout(timeout_ms),
            ),
            "user/keys/claim",
        )
        keys = body.get("one_time_keys")
        if not isinstance(keys, dict):
            return {"one_time_keys": {}}
        return {
            "one_time_keys": {
                u: v
                for u, v in keys.items()
                if isinstance(u, str) and u.partition(":")[2] == destination
            }
        }


class FederationToDevice:
    """homeserver.e2ee.ports.RemoteToDevice: `m.direct_to_device` EDUs via the outbox."""

    def __init__(self, sender: FederationSender) -> None:
        self._sender = sender

    async def send(
        self,
        destination: str,
        sender: str,
        event_type: str,
        message_id: str,
        messages: dict[str, dict[str, dict[str, Any]]],
    ) -> None:
        await self._sender.send_edu(
            [destination],
            "m.direct_to_device",
            {"sender": sender, "type": event_type, "message_id": message_id, "messages": messages},
        )
