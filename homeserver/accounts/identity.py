"""Calls to identity servers (the Identity Service API v2), as a homeserver makes them.

Clients name the identity server (`id_server`) and hand us their token for it
(`id_access_token`); `m.room.third_party_invite` events name key-validity URLs. Both
are chosen by users, so every request goes through the same outbound IP policy as
federation (no fetching our own network on a stranger's behalf), with a timeout and a
bound on what we read back.

- lookup: which Matrix ID a 3PID is bound to (hashed with the server's pepper);
- store-invite: park an invite for a 3PID nobody has bound yet;
- bind / unbind: associate a 3PID with a user, or stop (unbind is signed by this
  server with X-Matrix, as the identity server checks the request came from the user's
  homeserver);
- key validity: whether the key that signed a 3PID invite is still valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from base64 import urlsafe_b64encode
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from homeserver.errors import MatrixError
from homeserver.events.signing import sign_json_object
from homeserver.ids import is_valid_server_name
from homeserver.ipfilter import FilteringResolver, IPFilter, ip_literal_guard

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 64 * 1024
V2 = "/_matrix/identity/v2"


class IdentityServerError(Exception):
    """The identity server could not be reached or gave an unusable answer."""


def id_server_param(value: object) -> str:
    """An `id_server` from a client: a server name (host[:port]), nothing more (no
    scheme, path or credentials to smuggle a different URL through)."""
    if isinstance(value, str) and value.startswith("https://"):
        value = value[len("https://") :]
    if not isinstance(value, str) or not is_valid_server_name(value):
        raise MatrixError(400, "M_INVALID_PARAM", "id_server must be a server name")
    return value


class IdentityServers:
    def __init__(
        self,
        ip_filter: IPFilter,
        server_name: str,
        signing_key: Any,
        *,
        plain_http: bool = False,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`plain_http`: http:// instead of https:// (loopback test deployments only,
        with federation's `federation_client_plain_http_for_tests`)."""
        self._filter = ip_filter
        self._server_name = server_name
        self._signing_key = signing_key
        self._scheme = "http" if plain_http else "https"
        self._session = session

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=FilteringResolver(self._filter), limit=50, limit_per_host=5
                ),
                headers={"User-Agent": "homeserver-py identity"},
                trace_configs=[ip_literal_guard(self._filter)],
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        try:
            async with self._get_session().request(
                method, url, json=body, headers=headers, allow_redirects=False
            ) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise IdentityServerError(f"{url}: answer too large")
                try:
                    data = json.loads(raw) if raw else None
                except ValueError:
                    data = None
                return response.status, data
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise IdentityServerError(f"{url}: {e}") from None

    def _url(self, id_server: str, path: str) -> str:
        return f"{self._scheme}://{id_server}{V2}{path}"

    async def _ok(
        self, method: str, id_server: str, path: str, token: str | None, body: Any = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        status, data = await self._call(
            method, self._url(id_server, path), body=body, headers=headers
        )
        if status != 200 or not isinstance(data, dict):
            errcode = data.get("errcode") if isinstance(data, dict) else None
            raise IdentityServerError(f"{id_server}{path}: {status} {errcode or ''}".strip())
        return data

    # -- lookups and invites --------------------------------------------------------------

    async def lookup(self, id_server: str, token: str, medium: str, address: str) -> str | None:
        """The Matrix ID `medium`/`address` is bound to at `id_server`, or None."""
        details = await self._ok("GET", id_server, "/hash_details", token)
        algorithms = details.get("algorithms")
        pepper = details.get("lookup_pepper")
        if not isinstance(algorithms, list):
            raise IdentityServerError(f"{id_server}: no lookup algorithms")
        if "sha256" in algorithms and isinstance(pepper, str):
            digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
            query = urlsafe_b64encode(digest).decode().rstrip("=")
            body = {"addresses": [query], "algorithm": "sha256", "pepper": pepper}
        elif "none" in algorithms:
            query = f"{address} {medium}"
            body = {"addresses": [query], "algorithm": "none", "pepper": pepper or ""}
        else:
            raise IdentityServerError(f"{id_server}: no lookup algorithm we know")
        answer = await self._ok("POST", id_server, "/lookup", token, body)
        mappings = answer.get("mappings")
        mxid = mappings.get(query) if isinstance(mappings, dict) else None
        return mxid if isinstance(mxid, str) else None

    async def store_invite(self, id_server: str, token: str, invite: dict[str, Any]) -> dict:
        """The identity server's token, public keys and display name for a new 3PID
        invite (shape-checked)."""
        answer = await self._ok("POST", id_server, "/store-invite", token, invite)
        keys = answer.get("public_keys")
        if (
            not isinstance(answer.get("token"), str)
            or not isinstance(keys, list)
            or not keys
            or not all(
                isinstance(k, dict)
                and isinstance(k.get("public_key"), str)
                and isinstance(k.get("key_validity_url", ""), str)
                for k in keys[:10]
            )
        ):
            raise IdentityServerError(f"{id_server}: store-invite answer malformed")
        return answer

    async def key_is_valid(self, key_validity_url: str, public_key: str) -> bool:
        """Whether the identity server still vouches for `public_key` (a revoked key's
        signatures no longer redeem invites). Unreachable counts as not valid."""
        parts = urlsplit(key_validity_url)
        if parts.scheme not in ("https", self._scheme) or not parts.netloc:
            return False
        separator = "&" if parts.query else "?"
        status, data = await self._call(
            "GET", f"{key_validity_url}{separator}public_key={quote(public_key, safe='')}"
        )
        return status == 200 and isinstance(data, dict) and data.get("valid") is True

    # -- binds ------------------------------------------------------------------------------

    async def bind(
        self, id_server: str, token: str, sid: str, client_secret: str, mxid: str
    ) -> dict[str, Any]:
        body = {"sid": sid, "client_secret": client_secret, "mxid": mxid}
        return await self._ok("POST", id_server, "/3pid/bind", token, body)

    async def unbind(self, id_server: str, mxid: str, medium: str, address: str) -> bool:
        """Ask `id_server` to forget the binding, as the user's homeserver (an X-Matrix
        signed request); False when it could not (unreachable, refused)."""
        path = f"{V2}/3pid/unbind"
        body = {"mxid": mxid, "threepid": {"medium": medium, "address": address}}
        header = self._x_matrix("POST", path, id_server, body)
        try:
            status, _ = await self._call(
                "POST",
                f"{self._scheme}://{id_server}{path}",
                body=body,
                headers={"Authorization": header},
            )
        except IdentityServerError as e:
            log.info("unbind of %s at %s failed: %s", mxid, id_server, e)
            return False
        return status == 200

    def _x_matrix(self, method: str, uri: str, destination: str, content: Any) -> str:
        request = {
            "method": method,
            "uri": uri,
            "origin": self._server_name,
            "destination": destination,
            "content": content,
        }
        signed = sign_json_object(request, self._server_name, self._signing_key)
        key_id, sig = next(iter(signed["signatures"][self._server_name].items()))
        return (
            f'X-Matrix origin="{self._server_name}",destination="{destination}",'
            f'key="{key_id}",sig="{sig}"'
        )
