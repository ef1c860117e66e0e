"""A small identity server for tests, speaking the Identity Service API v2 parts a
homeserver uses: hashed lookup, invitation storage, key validity, bind (with the
`/3pid/onbind` call to the user's homeserver) and unbind (checking the homeserver's
X-Matrix signature against the key the homeserver publishes).

Validation sessions are faked: a test declares `validated[sid] = (medium, address)`
and the client secret it expects, as if the user had clicked the email link.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nacl.signing
from aiohttp import web
from signedjson.key import decode_verify_key_bytes, generate_signing_key
from signedjson.sign import sign_json, verify_signed_json

from tests.ports import free_port

TOKEN = "id-access-token"
PEPPER = "matrixrocks"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


@dataclass
class PendingInvite:
    medium: str
    address: str
    room_id: str
    sender: str
    token: str


@dataclass
class IdentityServer:
    homeservers: dict[str, str] = field(default_factory=dict)  # server name -> base URL
    bindings: dict[tuple[str, str], str] = field(default_factory=dict)  # (medium, address)
    validated: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # sid -> m, a, secret
    invites: list[PendingInvite] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    unbinds: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (origin, body)
    store_invite_bodies: list[dict[str, Any]] = field(default_factory=list)
    onbind_answers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = generate_signing_key("0")
        self.public_key = _b64(bytes(self.key.verify_key))
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._http = aiohttp.ClientSession()

    # -- lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        v2 = "/_matrix/identity/v2"
        app.router.add_get(v2 + "/hash_details", self._hash_details)
        app.router.add_post(v2 + "/lookup", self._lookup)
        app.router.add_post(v2 + "/store-invite", self._store_invite)
        app.router.add_get(v2 + "/pubkey/isvalid", self._isvalid)
        app.router.add_post(v2 + "/3pid/bind", self._bind)
        app.router.add_post(v2 + "/3pid/unbind", self._unbind)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._http.close()

    # -- what a test does -------------------------------------------------------------------

    def sign_invite(
        self, mxid: str, token: str, key: Any = None, sender: str | None = None
    ) -> dict[str, Any]:
        """The `signed` block for an invite token, as the identity server makes it
        (with `sender`: as its /sign-ed25519 does, for a client's third_party_signed)."""
        block = {"mxid": mxid, "token": token}
        if sender is not None:
            block["sender"] = sender
        return sign_json(block, self.name, key or self.key)

    def invite_for(self, address: str) -> PendingInvite:
        return next(i for i in self.invites if i.address == address)

    # -- the API ----------------------------------------------------------------------------

    @staticmethod
    def _authorised(request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized(
                text='{"errcode": "M_UNAUTHORIZED"}', content_type="application/json"
            )

    async def _hash_details(self, request: web.Request) -> web.Response:
        self._authorised(request)
        return web.json_response({"algorithms": ["none", "sha256"], "lookup_pepper": PEPPER})

    async def _lookup(self, request: web.Request) -> web.Response:
        self._authorised(request)
        body = await request.json()
        assert body["pepper"] == PEPPER and body["algorithm"] == "sha256"
        hashed = {}
        for (medium, address), mxid in self.bindings.items():
            digest = hashlib.sha256(f"{address} {medium} {PEPPER}".encode()).digest()
            hashed[base64.urlsafe_b64encode(digest).decode().rstrip("=")] = mxid
        return web.json_response(
            {"mappings": {a: hashed[a] for a in body["addresses"] if a in hashed}}
        )

    async def _store_invite(self, request: web.Request) -> web.Response:
        self._authorised(request)
        body = await request.json()
        self.store_invite_bodies.append(body)
        token = secrets.token_urlsafe(12)
        self.invites.append(
            PendingInvite(body["medium"], body["address"], body["room_id"], body["sender"], token)
        )
        local, _, domain = body["address"].partition("@")
        return web.json_response(
            {
                "token": token,
                "public_keys": [
                    {
                        "public_key": self.public_key,
                        "key_validity_url": f"http://{self.name}/_matrix/identity/v2/pubkey/isvalid",
                    }
                ],
                "display_name": f"{local[:1]}...@{domain}",
            }
        )

    async def _isvalid(self, request: web.Request) -> web.Response:
        key = request.query.get("public_key", "")
        return web.json_response({"valid": key == self.public_key and key not in self.revoked})

    async def _bind(self, request: web.Request) -> web.Response:
        self._authorised(request)
        body = await request.json()
        medium, address, secret = self.validated[body["sid"]]
        if body["client_secret"] != secret:
            return web.json_response({"errcode": "M_NO_VALID_SESSION"}, status=400)
        mxid = body["mxid"]
        self.bindings[(medium, address)] = mxid
        pending = [i for i in self.invites if (i.medium, i.address) == (medium, address)]
        if pending:
            onbind = {
                "medium": medium,
                "address": address,
                "mxid": mxid,
                "invites": [
                    {
                        "medium": medium,
                        "address": address,
                        "mxid": mxid,
                        "room_id": i.room_id,
                        "sender": i.sender,
                        "signed": self.sign_invite(mxid, i.token),
                    }
                    for i in pending
                ],
            }
            base = self.homeservers[mxid.partition(":")[2]]
            async with self._http.put(
                base + "/_matrix/federation/v1/3pid/onbind", json=onbind
            ) as response:
                self.onbind_answers.append(response.status)
            self.invites = [i for i in self.invites if i not in pending]
        return web.json_response({"medium": medium, "address": address, "mxid": mxid})

    async def _unbind(self, request: web.Request) -> web.Response:
        """Only the user's homeserver may unbind: its X-Matrix signature must verify
        with the key it publishes."""
        body = await request.json()
        params = dict(
            part.split("=", 1)
            for part in request.headers["Authorization"].removeprefix("X-Matrix ").split(",")
        )
        origin = params["origin"].strip('"')
        key_id, sig = params["key"].strip('"'), params["sig"].strip('"')
        base = self.homeservers[origin]
        async with self._http.get(base + "/_matrix/key/v2/server") as response:
            keys = (await response.json())["verify_keys"]
        verify_key = decode_verify_key_bytes(key_id, base64.b64decode(keys[key_id]["key"] + "=="))
        signed = {
            "method": request.method,
            "uri": request.path_qs,
            "origin": origin,
            "destination": params["destination"].strip('"'),
            "content": body,
            "signatures": {origin: {key_id: sig}},
        }
        verify_signed_json(signed, origin, verify_key)  # raises: a 500 the test will see
        if body["mxid"].partition(":")[2] != origin:
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        self.unbinds.append((origin, body))
        threepid = body["threepid"]
        self.bindings.pop((threepid["medium"], threepid["address"]), None)
        return web.json_response({})


def other_key() -> nacl.signing.SigningKey:
    return generate_signing_key("0")
