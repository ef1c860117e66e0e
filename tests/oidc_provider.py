"""A fake OpenID Connect provider on loopback for the single sign-on tests: discovery,
an authorization endpoint that signs in whoever the test says (`next_claims`) and
sends the browser back with a code, a token endpoint that checks the client's secret,
the redirect URI and the PKCE verifier and answers an RS256 ID token (PyJWT), the keys,
and userinfo. `tamper` makes the next ID token lie in one way (for the attack tests)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "homeserver"
CLIENT_SECRET = "client-secret"


class FakeProvider:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.next_claims: dict[str, Any] = {"sub": "alice-sub", "preferred_username": "alice"}
        self.tamper: str | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/userinfo", self._userinfo)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> FakeProvider:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    @property
    def issuer(self) -> str:
        return str(self.server.make_url("/"))

    def provider_config(self, **extra: Any) -> dict[str, Any]:
        return {
            "idp_id": "test",
            "idp_name": "Test IdP",
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "profile", "email"],
            "skip_verification": True,
            "user_mapping_provider": {
                "config": {
                    "localpart_template": "{{ user.preferred_username }}",
                    "display_name_template": "{{ user.name }}",
                    "email_template": "{{ user.email }}",
                }
            },
            **extra,
        }

    async def _discovery(self, request: web.Request) -> web.Response:
        base = self.issuer.rstrip("/")
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorize_requests.append(query)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"query": query, "claims": dict(self.next_claims)}
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        raise web.HTTPFound(target)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None or form.get("redirect_uri") != grant["query"]["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        challenge = grant["query"].get("code_challenge")
        if challenge is not None:
            digest = hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["query"]["nonce"],
            **grant["claims"],
        }
        key, alg, kid = self.key, "RS256", "k1"
        if self.tamper == "nonce":
            claims["nonce"] = "not-ours"
        elif self.tamper == "audience":
            claims["aud"] = "someone-else"
        elif self.tamper == "expired":
            claims["exp"] = now - 3600
        elif self.tamper == "other_key":
            key = self.other_key
        elif self.tamper == "hs256":
            key, alg = CLIENT_SECRET, "HS256"  # type: ignore[assignment]
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        if self.tamper == "none":
            header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=")
            body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
            token = f"{header.decode()}.{body.decode()}."
        access = secrets.token_urlsafe(16)
        self.codes[f"access:{access}"] = grant["claims"]
        return web.json_response(
            {"access_token": access, "token_type": "Bearer", "id_token": token}
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return web.json_response({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

    async def _userinfo(self, request: web.Request) -> web.Response:
        access = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims = self.codes.get(f"access:{access}")
        if claims is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response(claims)
